"""3D avatars: the procedural GLB builder and the GLB/VRM importer.

Built files are read back with two independent readers (trimesh and
pygltflib) and their animation data is decoded from the binary buffer, so
the checks are on what a viewer would load.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
from typing import Any

import numpy as np
import pygltflib
import pytest
import trimesh

from media.avatar.base import CLIPS, GLB_MIME, AvatarBuilder
from media.avatar.importer import import_avatar
from media.avatar.procedural import ProceduralAvatarBuilder, look_for
from media.avatar.registry import create_avatar_builder
from media.generation import MediaGenerationError, MediaRequest, PersonaLook
from media.media_config import MediaConfig

ADA = PersonaLook(
    name="Ada",
    attributes={"appearance": "long red hair, green eyes, olive skin, a blue hoodie, glasses"},
)


async def _build(persona: PersonaLook = ADA, **kwargs: Any) -> Any:
    request = MediaRequest(kind="avatar", prompt="", persona=persona, **kwargs)
    return await ProceduralAvatarBuilder().generate(request)


def _accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    """Decode one float accessor from the GLB's binary chunk."""
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[accessor.type]
    blob = gltf.binary_blob()
    start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
    data = np.frombuffer(blob, dtype=np.float32, count=accessor.count * width, offset=start)
    return data.reshape(accessor.count, width)


def _pack_glb(document: dict[str, Any], binary: bytes = b"") -> bytes:
    """A GLB written by hand (independent of the code under test)."""
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    if binary:
        chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def _unpack_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    length = struct.unpack_from("<I", data, 12)[0]
    document = json.loads(data[20 : 20 + length])
    rest = data[20 + length :]
    return document, rest[8:] if rest else b""


def _trimesh_glb() -> bytes:
    return trimesh.creation.box(extents=(1, 2, 1)).export(file_type="glb")


# -- the procedural builder


async def test_avatar_glb_loads_back_with_meshes_materials_and_clips() -> None:
    result = await _build()
    assert result.mime == GLB_MIME == "model/gltf-binary"
    assert result.data[:4] == b"glTF"

    scene = trimesh.load(io.BytesIO(result.data), file_type="glb")
    assert isinstance(scene, trimesh.Scene)
    assert len(scene.geometry) >= 20
    low, high = scene.bounds
    assert 0.8 < high[1] - low[1] < 1.2  # a waist-up figure about a metre tall, Y up

    gltf = pygltflib.GLTF2.load_from_bytes(result.data)
    assert len(gltf.meshes) == result.meta["meshes"] >= 20
    assert {m.name for m in gltf.materials} >= {"skin", "hair", "iris", "clothing", "lips"}
    for material in gltf.materials:
        pbr = material.pbrMetallicRoughness
        assert pbr is not None and len(pbr.baseColorFactor) == 4
        assert 0 <= pbr.roughnessFactor <= 1 and 0 <= pbr.metallicFactor <= 1
    assert [a.name for a in gltf.animations] == ["idle", "talk"] == result.meta["animations"]


async def test_animation_channels_are_linear_trs_on_animatable_nodes() -> None:
    gltf = pygltflib.GLTF2.load_from_bytes((await _build()).data)
    names = [n.name for n in gltf.nodes]
    durations = {}
    for animation in gltf.animations:
        targets = set()
        for channel in animation.channels:
            sampler = animation.samplers[channel.sampler]
            assert sampler.interpolation == "LINEAR"
            node = gltf.nodes[channel.target.node]
            assert node.matrix is None  # glTF forbids animating a matrix node
            assert channel.target.path in ("translation", "rotation", "scale")
            times = _accessor(gltf, sampler.input)[:, 0]
            values = _accessor(gltf, sampler.output)
            assert len(times) == len(values) >= 2
            assert np.all(np.diff(times) > 0) and times[0] == 0
            if channel.target.path == "rotation":
                assert np.allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-4)
            assert np.allclose(values[0], values[-1], atol=1e-5)  # loops without a jump
            targets.add(names[channel.target.node])
            durations[animation.name] = float(times[-1])
        if animation.name == "talk":
            assert "jaw" in targets and "head" in targets
            jaw = next(c for c in animation.channels if names[c.target.node] == "jaw")
            angles = 2 * np.arcsin(_accessor(gltf, animation.samplers[jaw.sampler].output)[:, 0])
            assert angles.max() > 0.05  # the mouth opens
        else:
            assert {"chest", "head", "eye_l"} <= targets
    assert durations == {"idle": 4.0, "talk": 2.0}


async def test_same_persona_same_file_other_persona_other_file() -> None:
    a, b = await _build(), await _build()
    assert a.data == b.data
    other = await _build(PersonaLook(name="Bruno", attributes={"appearance": "bald, tall"}))
    assert other.data != a.data
    reseeded = await _build(seed=7)
    assert reseeded.data != a.data


async def test_attributes_choose_colours_hair_and_glasses() -> None:
    result = await _build()
    look = result.meta["look"]
    assert look["hair"] == "#a5341e"  # red
    assert look["eyes"] == "#3ca05a"  # green
    assert look["hair_style"] == "long" and look["glasses"] is True
    gltf = pygltflib.GLTF2.load_from_bytes(result.data)
    names = {n.name for n in gltf.nodes}
    assert {"hair", "glasses", "jaw", "eye_l", "eye_r"} <= names
    hair = next(m for m in gltf.materials if m.name == "hair")
    r, g, b, _ = hair.pbrMetallicRoughness.baseColorFactor
    assert r > 3 * g and r > 3 * b  # linear red

    bald = await _build(PersonaLook(name="Bruno", attributes={"look": "bald, no glasses?"}))
    bald_names = {n.name for n in pygltflib.GLTF2.load_from_bytes(bald.data).nodes}
    assert "hair" not in bald_names
    assert bald.meta["look"]["glasses"] is False  # "no glasses" is not a request for glasses
    plain = await _build(PersonaLook(name="Cleo", attributes={"hair": "short black"}))
    plain_gltf = pygltflib.GLTF2.load_from_bytes(plain.data)
    assert "glasses" not in {n.name for n in plain_gltf.nodes}
    assert plain.meta["look"]["hair"] == "#1c1816"
    assert plain.meta["look"]["hair_style"] == "short"


def test_look_reads_sizes_and_is_stable_without_attributes() -> None:
    tall = look_for(PersonaLook(name="X", attributes={"body": "tall and broad"}))
    small = look_for(PersonaLook(name="X", attributes={"body": "petite, slim"}))
    assert tall.height > 1.0 > small.height
    assert tall.build > 1.0 > small.build
    assert look_for(PersonaLook(name="Zed")) == look_for(PersonaLook(name="Zed"))
    names = [f"persona {i}" for i in range(12)]
    assert len({look_for(PersonaLook(name=n)) for n in names}) == len(names)


@pytest.mark.parametrize(
    ("animations", "expected"),
    [(["idle"], ["idle"]), (["talk"], ["talk"]), ([], []), ("talk,idle", ["idle", "talk"])],
)
async def test_clips_can_be_chosen(animations: Any, expected: list[str]) -> None:
    result = await _build(options={"animations": animations})
    gltf = pygltflib.GLTF2.load_from_bytes(result.data)
    assert [a.name for a in gltf.animations] == expected == result.meta["animations"]


async def test_unknown_clip_is_invalid_request() -> None:
    with pytest.raises(MediaGenerationError) as caught:
        await _build(options={"animations": ["idle", "dance"]})
    assert caught.value.code == "invalid_request"
    assert "dance" in str(caught.value)


async def test_progress_is_per_stage_and_per_part() -> None:
    calls: list[tuple[float, dict[str, Any]]] = []

    async def progress(fraction: float, **info: Any) -> None:
        calls.append((fraction, info))

    result = await ProceduralAvatarBuilder().generate(
        MediaRequest(kind="avatar", prompt="", persona=ADA), progress
    )
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = [i["stage"] for _, i in calls]
    assert stages[0] == "look" and stages[-1] == "done"
    assert {"animations", "export"} <= set(stages)
    parts = [i for _, i in calls if i["stage"] == "geometry"]
    assert len(parts) == parts[0]["parts"] == result.meta["nodes"]


async def test_cancelled_build_raises_cancelled() -> None:
    async def progress(fraction: float, **info: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await ProceduralAvatarBuilder().generate(
            MediaRequest(kind="avatar", prompt="", persona=ADA), progress
        )


def test_registry_default_is_procedural() -> None:
    builder = create_avatar_builder(MediaConfig(avatar_provider="auto"))
    assert isinstance(builder, ProceduralAvatarBuilder)
    assert isinstance(builder, AvatarBuilder) and builder.kind == "avatar"
    assert CLIPS == ("idle", "talk")
    with pytest.raises(MediaGenerationError) as caught:
        create_avatar_builder(MediaConfig(avatar_provider="metahuman"))
    assert caught.value.code == "generator_unavailable"


# -- the importer


def test_import_accepts_a_trimesh_glb() -> None:
    data = _trimesh_glb()
    result = import_avatar(data, max_bytes=1_000_000)
    assert result.data == data  # stored as it came
    assert result.mime == GLB_MIME
    assert result.meta["format"] == "glb" and result.meta["extension"] == ".glb"
    assert result.meta["meshes"] == 1 and result.meta["animations"] == []
    assert result.meta["generator"] == "import"


async def test_import_accepts_a_built_avatar_and_lists_its_clips() -> None:
    built = await _build()
    result = import_avatar(built.data)
    assert result.meta["animations"] == ["idle", "talk"]
    assert result.meta["nodes"] == built.meta["nodes"]


@pytest.mark.parametrize(
    ("extension", "meta", "version"),
    [
        (
            "VRMC_vrm",
            {"name": "Kit", "authors": ["Ann", "Bo"], "licenseUrl": "https://vrm.dev/licenses/1.0/",
             "avatarPermission": "onlyAuthor", "commercialUsage": "personalNonProfit"},
            "1.0",
        ),
        (
            "VRM",
            {"title": "Kit", "author": "Ann, Bo", "licenseName": "CC_BY",
             "allowedUserName": "OnlyAuthor", "commercialUssageName": "Disallow"},
            "0.x",
        ),
    ],
)  # fmt: skip
def test_import_detects_vrm_and_its_licence(
    extension: str, meta: dict[str, Any], version: str
) -> None:
    document, binary = _unpack_glb(_trimesh_glb())
    document["extensionsUsed"] = [extension]
    document["extensions"] = {extension: {"specVersion": version, "meta": meta}}
    document["asset"]["generator"] = "VRoid Studio-1.28"
    result = import_avatar(_pack_glb(document, binary))
    assert result.mime == GLB_MIME
    assert result.meta["format"] == "vrm" and result.meta["extension"] == ".vrm"
    assert result.meta["vrm_version"] == version
    assert result.meta["title"] == "Kit"
    assert result.meta["author"] == "Ann, Bo"
    assert result.meta["avatar_permission"] and result.meta["commercial_usage"]
    assert result.meta["source"] == "vroid"


def test_import_recognises_ready_player_me() -> None:
    document, binary = _unpack_glb(_trimesh_glb())
    document["nodes"][0]["name"] = "Wolf3D_Head"
    result = import_avatar(_pack_glb(document, binary))
    assert result.meta["source"] == "ready_player_me"
    assert result.meta["format"] == "glb"


def _corrupt(kind: str) -> bytes:
    data = _trimesh_glb()
    document, binary = _unpack_glb(data)
    if kind == "garbage":
        return b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    if kind == "truncated":
        return data[:-16]
    if kind == "trailing":
        return data + b"\0\0\0\0"
    if kind == "version1":
        return data[:4] + struct.pack("<I", 1) + data[8:]
    if kind == "bad_json":
        return _pack_glb({"asset": {"version": "2.0"}}, binary)[:20] + b"{not json" + b" " * 7
    if kind == "gltf1":
        document["asset"]["version"] = "1.0"
    elif kind == "external_buffer":
        document["buffers"][0]["uri"] = "model.bin"
    elif kind == "external_image":
        document["images"] = [{"uri": "skin.png"}]
    elif kind == "view_past_end":
        document["bufferViews"][0]["byteLength"] = 10_000_000
    elif kind == "no_meshes":
        document["meshes"] = []
        for node in document["nodes"]:
            node.pop("mesh", None)
    elif kind == "gltf_text":
        return json.dumps(document).encode()
    elif kind == "empty":
        return b""
    return _pack_glb(document, binary)


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "truncated",
        "trailing",
        "version1",
        "bad_json",
        "gltf1",
        "external_buffer",
        "external_image",
        "view_past_end",
        "no_meshes",
        "gltf_text",
        "empty",
    ],
)
def test_import_rejects_broken_files(kind: str) -> None:
    with pytest.raises(MediaGenerationError) as caught:
        import_avatar(_corrupt(kind))
    assert caught.value.code == "invalid_request"
    assert str(caught.value)


def test_import_rejects_oversized_files() -> None:
    data = _trimesh_glb()
    assert import_avatar(data, max_bytes=len(data)).data == data
    with pytest.raises(MediaGenerationError) as caught:
        import_avatar(data, max_bytes=len(data) - 1)
    assert caught.value.code == "invalid_request"
    assert "SALON_AVATAR_IMPORT_MAX_BYTES" in str(caught.value)


def test_quaternion_helper_matches_trimesh() -> None:
    from media.avatar.procedural import _quat

    x, y, z, w = _quat(0.3, -0.2, 0.1)
    ours = trimesh.transformations.quaternion_matrix([w, x, y, z])
    theirs = (
        trimesh.transformations.rotation_matrix(0.1, [0, 0, 1])
        @ trimesh.transformations.rotation_matrix(-0.2, [0, 1, 0])
        @ trimesh.transformations.rotation_matrix(0.3, [1, 0, 0])
    )
    assert np.allclose(ours, theirs, atol=1e-5)
    assert math.isclose(x * x + y * y + z * z + w * w, 1.0, rel_tol=1e-5)
