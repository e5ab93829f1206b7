"""Write a node tree of meshes, PBR materials and animation clips as one GLB, with pygltflib.

The builders describe a model as plain values (:class:`Part`, :class:`Material`,
:class:`Clip`); this module lays them out as glTF 2.0: one binary buffer,
4-byte aligned buffer views, accessors with the ``min``/``max`` the spec
requires, nodes in translation/rotation/scale form (glTF forbids animating
a node given as a matrix) and LINEAR animation samplers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pygltflib as gl

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]  # x, y, z, w (glTF order)

_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_FLOAT = 5126
_UNSIGNED_SHORT = 5123
_UNSIGNED_INT = 5125
_TRIANGLES = 4


@dataclass(frozen=True)
class Material:
    """A metallic-roughness material; ``color`` is sRGB 0..1 as a person picks it."""

    name: str
    color: Vec3
    roughness: float = 0.6
    metallic: float = 0.0
    double_sided: bool = False


@dataclass
class Part:
    """One node: its place under ``parent`` and, optionally, a mesh in node-local metres."""

    name: str
    parent: str | None = None
    translation: Vec3 = (0.0, 0.0, 0.0)
    rotation: Quat = (0.0, 0.0, 0.0, 1.0)
    scale: Vec3 = (1.0, 1.0, 1.0)
    vertices: Any = None  # float array (n, 3)
    normals: Any = None  # float array (n, 3)
    faces: Any = None  # int array (m, 3)
    material: str | None = None


@dataclass(frozen=True)
class Track:
    """Keyframes of one node property: ``path`` is translation, rotation or scale."""

    node: str
    path: str
    times: Sequence[float]
    values: Sequence[Sequence[float]]


@dataclass
class Clip:
    """A named animation: tracks played together (``idle``, ``talk``)."""

    name: str
    tracks: list[Track] = field(default_factory=list)


def srgb_to_linear(value: float) -> float:
    """glTF's ``baseColorFactor`` is linear light; colour pickers give sRGB."""
    if value <= 0.04045:
        return value / 12.92
    return float(((value + 0.055) / 1.055) ** 2.4)


class _Blob:
    """The GLB's single binary buffer, built up view by view."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[gl.BufferView] = []
        self.accessors: list[gl.Accessor] = []

    def accessor(
        self, array: Any, kind: str, *, target: int | None = None, bounds: bool = True
    ) -> int:
        array = np.ascontiguousarray(array)
        component = {
            np.dtype(np.float32): _FLOAT,
            np.dtype(np.uint16): _UNSIGNED_SHORT,
            np.dtype(np.uint32): _UNSIGNED_INT,
        }[array.dtype]
        self.data.extend(b"\0" * (-len(self.data) % 4))  # every view starts 4-byte aligned
        offset = len(self.data)
        self.data.extend(array.tobytes())
        self.views.append(
            gl.BufferView(buffer=0, byteOffset=offset, byteLength=array.nbytes, target=target)
        )
        flat = array.reshape(len(array), -1)
        accessor = gl.Accessor(
            bufferView=len(self.views) - 1,
            componentType=component,
            count=len(array),
            type=kind,
        )
        if bounds:
            accessor.min = [_number(v) for v in flat.min(axis=0)]
            accessor.max = [_number(v) for v in flat.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _number(value: Any) -> float | int:
    return int(value) if np.issubdtype(type(value), np.integer) else float(value)


def write_glb(
    parts: Sequence[Part],
    materials: Sequence[Material],
    clips: Sequence[Clip],
    *,
    generator: str,
    extras: dict[str, Any] | None = None,
) -> bytes:
    """Assemble ``parts`` (parents listed before children) into GLB bytes."""
    blob = _Blob()
    material_index = {m.name: i for i, m in enumerate(materials)}
    node_index = {p.name: i for i, p in enumerate(parts)}
    gl_materials = [
        gl.Material(
            name=m.name,
            pbrMetallicRoughness=gl.PbrMetallicRoughness(
                baseColorFactor=[round(srgb_to_linear(c), 5) for c in m.color] + [1.0],
                metallicFactor=m.metallic,
                roughnessFactor=m.roughness,
            ),
            doubleSided=m.double_sided,
        )
        for m in materials
    ]
    meshes: list[gl.Mesh] = []
    nodes: list[gl.Node] = []
    for part in parts:
        node = gl.Node(
            name=part.name,
            translation=list(part.translation) if any(part.translation) else None,
            rotation=list(part.rotation) if part.rotation != (0.0, 0.0, 0.0, 1.0) else None,
            scale=list(part.scale) if part.scale != (1.0, 1.0, 1.0) else None,
            children=[i for i, p in enumerate(parts) if p.parent == part.name],
        )
        if part.vertices is not None:
            vertices = np.asarray(part.vertices, dtype=np.float32)
            normals = np.asarray(part.normals, dtype=np.float32)
            index_type = np.uint16 if len(vertices) < 65536 else np.uint32
            faces = np.asarray(part.faces, dtype=index_type).reshape(-1)
            position = blob.accessor(vertices, "VEC3", target=_ARRAY_BUFFER)
            normal = blob.accessor(normals, "VEC3", target=_ARRAY_BUFFER, bounds=False)
            indices = blob.accessor(faces, "SCALAR", target=_ELEMENT_ARRAY_BUFFER)
            primitive = gl.Primitive(
                attributes=gl.Attributes(POSITION=position, NORMAL=normal),
                indices=indices,
                material=material_index[part.material] if part.material else None,
                mode=_TRIANGLES,
            )
            meshes.append(gl.Mesh(name=part.name, primitives=[primitive]))
            node.mesh = len(meshes) - 1
        nodes.append(node)
    animations = [_animation(clip, node_index, blob) for clip in clips]
    gltf = gl.GLTF2(
        asset=gl.Asset(version="2.0", generator=generator),
        scene=0,
        scenes=[
            gl.Scene(
                name="avatar",
                nodes=[i for i, p in enumerate(parts) if p.parent is None],
                extras=extras or {},
            )
        ],
        nodes=nodes,
        meshes=meshes,
        materials=gl_materials,
        accessors=blob.accessors,
        bufferViews=blob.views,
        buffers=[gl.Buffer(byteLength=len(blob.data))],
        animations=animations,
    )
    gltf.set_binary_blob(bytes(blob.data))
    return b"".join(gltf.save_to_bytes())


def _animation(clip: Clip, node_index: dict[str, int], blob: _Blob) -> gl.Animation:
    samplers: list[gl.AnimationSampler] = []
    channels: list[gl.AnimationChannel] = []
    time_accessors: dict[tuple[float, ...], int] = {}
    for track in clip.tracks:
        times = tuple(float(t) for t in track.times)
        if times not in time_accessors:  # tracks on one timeline share their input
            time_accessors[times] = blob.accessor(np.asarray(times, dtype=np.float32), "SCALAR")
        width = 4 if track.path == "rotation" else 3
        values = np.asarray(track.values, dtype=np.float32).reshape(len(times), width)
        output = blob.accessor(values, "VEC4" if width == 4 else "VEC3", bounds=False)
        samplers.append(
            gl.AnimationSampler(input=time_accessors[times], output=output, interpolation="LINEAR")
        )
        channels.append(
            gl.AnimationChannel(
                sampler=len(samplers) - 1,
                target=gl.AnimationChannelTarget(node=node_index[track.node], path=track.path),
            )
        )
    return gl.Animation(name=clip.name, samplers=samplers, channels=channels)
