"""The procedural figure's geometry: trimesh primitives placed as a node tree.

Metres, Y up, facing +Z (glTF's conventions). Nodes that animate (body,
chest, arms, head, eyes, jaw) are pivots placed where the motion turns
(the neck for the head, the hinge below the ears for the jaw), and their
meshes are offset from the pivot, so a rotation in a clip moves the part
the way the body would. Static tilts are baked into vertices, because an
animation channel replaces a node's whole rotation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import trimesh

from media.avatar.gltf import Material, Part

if TYPE_CHECKING:
    from media.avatar.procedural import AvatarLook

Vec3 = tuple[float, float, float]

_X, _Y, _Z = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def materials_for(look: AvatarLook) -> list[Material]:
    """The figure's PBR materials: skin, hair, eyes, lips, clothing, glasses."""
    return [
        Material("skin", look.skin, roughness=0.55),
        Material("hair", look.hair, roughness=0.5, double_sided=True),  # the cap is an open shell
        Material("eye_white", (0.95, 0.95, 0.93), roughness=0.15),
        Material("iris", look.eyes, roughness=0.1),
        Material("pupil", (0.02, 0.02, 0.02), roughness=0.05),
        Material("lips", look.lips, roughness=0.45),
        Material("mouth", (0.25, 0.06, 0.08), roughness=0.9),
        Material("clothing", look.clothing, roughness=0.85),
        Material("glasses", (0.12, 0.12, 0.14), roughness=0.3, metallic=0.6),
    ]


def _place(
    mesh: trimesh.Trimesh,
    *,
    scale: Vec3 = (1.0, 1.0, 1.0),
    rotate: list[tuple[float, list[float]]] | None = None,
    offset: Vec3 = (0.0, 0.0, 0.0),
) -> trimesh.Trimesh:
    """Scale, then rotate (angle, axis) in order, then move a primitive."""
    matrix = np.diag([*scale, 1.0])
    for angle, axis in rotate or []:
        matrix = trimesh.transformations.rotation_matrix(angle, axis) @ matrix
    matrix = trimesh.transformations.translation_matrix(offset) @ matrix
    mesh.apply_transform(matrix)
    return mesh


def _merge(meshes: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    merged = trimesh.util.concatenate(meshes)
    assert isinstance(merged, trimesh.Trimesh)  # concatenate is typed as any Geometry
    return merged


def _sphere(radius: float = 1.0, detail: int = 2) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=detail, radius=radius)


def _upright_capsule(length: float, radius: float) -> trimesh.Trimesh:
    """A capsule along Y (trimesh builds them along Z)."""
    mesh = trimesh.creation.capsule(height=length, radius=radius, count=[20, 10])
    return _place(mesh, rotate=[(-math.pi / 2, _X)])


def _hair_cap(look: AvatarLook) -> trimesh.Trimesh:
    """The top and back of a sphere around the skull, leaving the face and brows free."""
    cap = trimesh.creation.uv_sphere(radius=1.0, count=[28, 28])
    centres = cap.triangles_center
    nx, ny, nz = centres[:, 0], centres[:, 1], centres[:, 2]
    keep = (ny > 0.45) | ((nz < 0.0) & (ny > -0.45)) | ((np.abs(nx) > 0.75) & (ny > 0.1))
    cap.update_faces(keep)
    cap.remove_unreferenced_vertices()
    pieces = [_place(cap, scale=(0.11, 0.128, 0.121), offset=(0.0, 0.135, -0.004))]
    if look.hair_style == "long":
        pieces.append(
            _place(_upright_capsule(0.16, 0.1), scale=(1.05, 1.0, 0.45), offset=(0, 0.03, -0.065))
        )
    elif look.hair_style == "bun":
        pieces.append(_place(_sphere(0.048), offset=(0.0, 0.225, -0.07)))
    return _merge(pieces)


def _glasses() -> trimesh.Trimesh:
    rims = [
        _place(trimesh.creation.torus(0.024, 0.003, 24, 8), offset=(x, 0.14, 0.112))
        for x in (-0.038, 0.038)
    ]
    bridge = _place(
        trimesh.creation.cylinder(radius=0.0025, height=0.03, sections=8),
        rotate=[(math.pi / 2, _Y)],
        offset=(0.0, 0.142, 0.112),
    )
    return _merge([*rims, bridge])


# Head parts as ellipsoids: name, parent, node position, material, radii, centre
# in the node, icosphere detail. Positions sit on the skull's surface (radii
# 0.101 x 0.121 x 0.11 around y=0.13), eyes and lips just proud of it.
_ELLIPSOIDS: list[tuple[str, str, Vec3, str, Vec3, Vec3, int]] = [
    ("skull", "head", (0, 0, 0), "skin", (0.101, 0.121, 0.11), (0, 0.13, 0), 3),
    ("ear_l", "head", (0, 0, 0), "skin", (0.0084, 0.024, 0.0144), (0.104, 0.13, -0.005), 2),
    ("ear_r", "head", (0, 0, 0), "skin", (0.0084, 0.024, 0.0144), (-0.104, 0.13, -0.005), 2),
    ("nose", "head", (0, 0, 0), "skin", (0.0128, 0.0208, 0.016), (0, 0.115, 0.107), 2),
    ("eye_l", "head", (0.038, 0.14, 0.088), "eye_white", (0.019, 0.019, 0.019), (0, 0, 0), 2),
    ("iris_l", "eye_l", (0, 0, 0.0165), "iris", (0.009, 0.009, 0.004), (0, 0, 0), 2),
    ("pupil_l", "eye_l", (0, 0, 0.0195), "pupil", (0.0045, 0.0045, 0.0018), (0, 0, 0), 1),
    ("eye_r", "head", (-0.038, 0.14, 0.088), "eye_white", (0.019, 0.019, 0.019), (0, 0, 0), 2),
    ("iris_r", "eye_r", (0, 0, 0.0165), "iris", (0.009, 0.009, 0.004), (0, 0, 0), 2),
    ("pupil_r", "eye_r", (0, 0, 0.0195), "pupil", (0.0045, 0.0045, 0.0018), (0, 0, 0), 1),
    ("mouth", "head", (0, 0, 0), "mouth", (0.025, 0.011, 0.006), (0, 0.077, 0.097), 2),
    ("upper_lip", "head", (0, 0, 0), "lips", (0.028, 0.0065, 0.009), (0, 0.085, 0.1), 2),
    ("lower_lip", "jaw", (0, 0, 0), "lips", (0.026, 0.007, 0.009), (0, -0.043, 0.1), 2),
]


def _spec(look: AvatarLook) -> list[tuple[Part, Callable[[], trimesh.Trimesh | None]]]:
    """Every node: where it sits and how to make its mesh (None: a pivot only)."""
    # The head is drawn 1.2x life size against the body: stylized figures read
    # as friendly (and their faces as faces) at chat-thumbnail sizes.
    h, b, k = look.height, look.build, look.head * 1.2
    tilt = 0.12  # arms hang slightly away from the body

    def arm(side: float) -> trimesh.Trimesh:
        # Hung from the shoulder pivot first, then tilted about it.
        mesh = _place(_upright_capsule(0.3, 0.05), offset=(0.0, -0.17, 0.0))
        return _place(mesh, rotate=[(side * tilt, _Z)])

    def hand_at(side: float) -> Vec3:
        angle = side * tilt
        return (round(0.37 * math.sin(angle), 5), round(-0.37 * math.cos(angle), 5), 0.0)

    def torso() -> trimesh.Trimesh:
        body = _place(_upright_capsule(0.26, 0.15), scale=(1.05 * b, 1.0, 0.62))
        shoulders = _place(
            trimesh.creation.capsule(height=0.3 * b, radius=0.07, count=[20, 10]),
            rotate=[(math.pi / 2, _Y)],
            scale=(1.0, 1.0, 0.8),
            offset=(0.0, 0.19, 0.0),
        )
        return _merge([body, shoulders])

    def hand() -> trimesh.Trimesh:
        return _place(_sphere(0.048), scale=(0.8, 1.1, 0.6))

    def ellipsoid(scale: Vec3, offset: Vec3, detail: int = 2) -> Callable[[], trimesh.Trimesh]:
        return lambda: _place(_sphere(1.0, detail), scale=scale, offset=offset)

    def brow(side: float) -> trimesh.Trimesh:
        mesh = trimesh.creation.capsule(height=0.03, radius=0.005, count=[10, 6])
        return _place(
            mesh,
            rotate=[(math.pi / 2, _Y), (side * 0.12, _Z)],
            offset=(side * 0.04, 0.172, 0.095),
        )

    def node(name: str, parent: str | None, at: Vec3 = (0.0, 0.0, 0.0), **kw: Any) -> Part:
        return Part(name=name, parent=parent, translation=at, **kw)

    def neck() -> trimesh.Trimesh:
        mesh = trimesh.creation.cylinder(radius=0.052, height=0.1, sections=20)
        return _place(mesh, rotate=[(-math.pi / 2, _X)], offset=(0.0, 0.02, 0.0))

    spec: list[tuple[Part, Callable[[], trimesh.Trimesh | None]]] = [
        (node("avatar", None), lambda: None),
        (node("body", "avatar"), lambda: None),
        (node("chest", "body", (0.0, 0.27 * h, 0.0), material="clothing"), torso),
        (node("neck", "body", (0.0, 0.55 * h, 0.0), material="skin"), neck),
        (node("arm_l", "body", (0.215 * b, 0.46 * h, 0.0), material="clothing"), lambda: arm(1)),
        (node("hand_l", "arm_l", hand_at(1), material="skin"), hand),
        (node("arm_r", "body", (-0.215 * b, 0.46 * h, 0.0), material="clothing"), lambda: arm(-1)),
        (node("hand_r", "arm_r", hand_at(-1), material="skin"), hand),
        (node("head", "body", (0.0, 0.585 * h, 0.0), scale=(k, k, k)), lambda: None),
        (node("jaw", "head", (0.0, 0.115, 0.0)), lambda: None),  # the hinge, below the ears
        (node("brow_l", "head", material="hair"), lambda: brow(1)),
        (node("brow_r", "head", material="hair"), lambda: brow(-1)),
    ]
    for name, parent, at, material, radii, centre, detail in _ELLIPSOIDS:
        spec.append((node(name, parent, at, material=material), ellipsoid(radii, centre, detail)))
    if look.hair_style != "bald":
        spec.append((node("hair", "head", material="hair"), lambda: _hair_cap(look)))
    if look.glasses:
        spec.append((node("glasses", "head", material="glasses"), _glasses))
    return spec


def build_parts(look: AvatarLook, report: Callable[..., None]) -> list[Part]:
    """Make every node's mesh, reporting after each part (``part``, ``parts``)."""
    spec = _spec(look)
    parts: list[Part] = []
    for index, (part, make) in enumerate(spec, start=1):
        mesh = make()
        if mesh is not None:
            part.vertices = np.round(mesh.vertices, 6)
            part.normals = np.asarray(mesh.vertex_normals)
            part.faces = np.asarray(mesh.faces)
        parts.append(part)
        report(index / len(spec), stage="geometry", part=part.name, parts=len(spec))
    return parts
