"""Persona specs and Character Card V1/V2/V3 import/export, JSON and PNG."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from agents.cards import (
    CardError,
    PersonaSpec,
    apply_patch,
    load_card_file,
    parse_persona_payload,
    persona_to_public,
    read_png_card,
    slugify,
    to_card_v2,
    to_card_v3,
    write_png_card,
)

SIG = b"\x89PNG\r\n\x1a\n"

BOOK = {
    "name": "Ada's lore",
    "scan_depth": 4,
    "extensions": {"vendor": {"deep": [1, {"x": None}]}},
    "entries": [
        {
            "keys": ["engine"],
            "content": "The Analytical Engine.",
            "extensions": {},
            "enabled": True,
            "insertion_order": 10,
            "unknown_entry_key": {"kept": True},
        }
    ],
}

V2_DATA = {
    "name": "Ada",
    "description": "A mathematician.",
    "personality": "curious",
    "scenario": "London, 1843",
    "first_mes": "Hello!",
    "mes_example": "<START>\n{{user}}: hi\n{{char}}: hello",
    "creator_notes": "notes",
    "system_prompt": "Be Ada.",
    "post_history_instructions": "Stay in character.",
    "alternate_greetings": ["Good day.", "Ah, a visitor."],
    "character_book": BOOK,
    "tags": ["history", "math"],
    "creator": "someone",
    "character_version": "1.2",
    "extensions": {
        "talkativeness": "0.5",
        "depth_prompt": {"prompt": "p", "depth": 4, "nested": {"a": [1, 2, {"b": "c"}]}},
        "salon": {"voice": {"id": "en-1", "rate": 1.1}, "slug": "ada-l", "future": 7},
    },
}


def v2_card(**data_overrides):
    data = copy.deepcopy(V2_DATA) | data_overrides
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def v3_card():
    data = copy.deepcopy(V2_DATA) | {
        "nickname": "Countess",
        "creator_notes_multilingual": {"en": "notes", "fr": "notes fr"},
        "source": ["https://example.com/ada"],
        "group_only_greetings": ["Hello, everyone."],
        "creation_date": 1700000000,
        "modification_date": 1700000500,
        "assets": [{"type": "icon", "uri": "embeded://a.png", "name": "main", "ext": "png"}],
    }
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


# --- PNG helpers, written independently of the module under test ------------------------


def chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def chunks_of(png: bytes) -> list[tuple[bytes, bytes, int]]:
    assert png.startswith(SIG)
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        ctype, payload = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        out.append((ctype, payload, crc))
        pos += 12 + length
    return out


def text_chunks(png: bytes) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for ctype, payload, _ in chunks_of(png):
        if ctype == b"tEXt":
            key, value = payload.split(b"\0", 1)
            found.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
    return found


def b64json(obj) -> bytes:
    return base64.b64encode(json.dumps(obj).encode("utf-8"))


def plain_png(**text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", (2, 3), (10, 20, 30)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_with(*extra: bytes) -> bytes:
    """A valid PNG with ``extra`` raw chunks inserted before IEND."""
    base = plain_png()
    assert base.endswith(chunk(b"IEND", b""))
    return base[:-12] + b"".join(extra) + chunk(b"IEND", b"")


# --- JSON import / export ---------------------------------------------------------------


def test_v2_round_trip_is_lossless():
    card = v2_card()
    spec = parse_persona_payload(copy.deepcopy(card))
    assert spec.voice == {"id": "en-1", "rate": 1.1}
    assert spec.slug == "ada-l"
    assert spec.character_book == BOOK
    assert to_card_v2(spec) == card  # nested unknown extensions + lorebook verbatim


def test_v2_import_does_not_alias_caller_data():
    card = v2_card()
    spec = parse_persona_payload(card)
    card["data"]["extensions"]["depth_prompt"]["nested"]["a"].append("mutated")
    assert spec.extensions["depth_prompt"]["nested"]["a"] == [1, 2, {"b": "c"}]
    exported = to_card_v2(spec)
    exported["data"]["character_book"]["entries"].clear()
    assert spec.character_book is not None and len(spec.character_book["entries"]) == 1


def test_v2_ignores_unknown_data_keys_and_v1_mirror_and_nulls():
    # SillyTavern writes V1 fields at top level too; unknown data keys are not spec fields.
    card = v2_card(avatar="none", character_book=None, tags=None, creator_notes=None)
    card.update(name="Top-level name", description="ignored", chat="x")
    spec = parse_persona_payload(card)
    assert spec.name == "Ada"
    assert spec.description == "A mathematician."
    assert spec.character_book is None and spec.tags == [] and spec.creator_notes == ""
    assert "character_book" not in to_card_v2(spec)["data"]


def test_v2_card_without_salon_extension():
    card = v2_card()
    del card["data"]["extensions"]["salon"]
    spec = parse_persona_payload(card)
    assert spec.voice is None and spec.slug is None
    assert to_card_v2(spec) == card
    assert "salon" not in to_card_v2(spec)["data"]["extensions"]


def test_v2_export_has_every_v2_field_and_no_v3_fields():
    spec = parse_persona_payload(v3_card())
    data = to_card_v2(spec)["data"]
    assert set(data) == {
        "name", "description", "personality", "scenario", "first_mes", "mes_example",
        "creator_notes", "system_prompt", "post_history_instructions", "alternate_greetings",
        "character_book", "tags", "creator", "character_version", "extensions",
    }  # fmt: skip


def test_v3_import_and_export_round_trip():
    card = v3_card()
    spec = parse_persona_payload(copy.deepcopy(card))
    assert spec.nickname == "Countess"
    assert spec.group_only_greetings == ["Hello, everyone."]
    assert spec.creator_notes_multilingual == {"en": "notes", "fr": "notes fr"}
    assert spec.source == ["https://example.com/ada"]
    assert spec.creation_date == 1700000000
    assert spec.assets is not None and spec.assets[0]["uri"] == "embeded://a.png"
    assert to_card_v3(spec) == card


def test_v3_export_defaults():
    v3 = to_card_v3(PersonaSpec(name="Bo"))
    assert v3["spec"] == "chara_card_v3" and v3["spec_version"] == "3.0"
    data = v3["data"]
    assert data["group_only_greetings"] == []
    assert data["assets"] == [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
    for absent in ("nickname", "source", "creation_date", "character_book"):
        assert absent not in data
    assert data["extensions"] == {}  # no empty "salon" block when there's nothing to store


def test_v3_only_fields_are_not_read_from_v2_card():
    spec = parse_persona_payload(v2_card(nickname="Countess", group_only_greetings=["x"]))
    assert spec.nickname is None and spec.group_only_greetings == []


def test_v3_float_timestamps_become_ints():
    card = v3_card()
    card["data"]["creation_date"] = 1700000000.0
    assert parse_persona_payload(card).creation_date == 1700000000


def test_v1_flat_card():
    v1 = {
        "name": "Old",
        "description": "d",
        "personality": "p",
        "scenario": "s",
        "first_mes": "hi",
        "mes_example": "ex",
        # TavernAI export leftovers
        "avatar": "none",
        "chat": "Old - 2023",
        "create_date": "2023-1-1",
    }
    spec = parse_persona_payload(v1)
    assert (spec.name, spec.personality, spec.first_mes, spec.mes_example) == (
        "Old",
        "p",
        "hi",
        "ex",
    )
    assert to_card_v2(spec)["data"]["scenario"] == "s"


def test_salon_json_round_trip():
    spec = PersonaSpec(
        name="  Captain Ada  ",
        slug="cap",
        voice="alloy",
        extensions={"x": {"y": [1]}},
        character_book={"entries": []},
        creation_date=5,
    )
    assert spec.name == "Captain Ada"
    public = persona_to_public(spec)
    json.dumps(public)  # JSON-safe
    assert public["voice"] == "alloy" and public["slug"] == "cap"
    assert parse_persona_payload(public) == spec


def test_salon_voice_and_slug_travel_in_extensions():
    spec = PersonaSpec(name="Bo", voice={"id": "v"}, slug="bo-2", extensions={"salon": {"k": 1}})
    ext = to_card_v2(spec)["data"]["extensions"]
    assert ext["salon"] == {"k": 1, "voice": {"id": "v"}, "slug": "bo-2"}
    assert spec.extensions == {"salon": {"k": 1}}  # export must not mutate the spec
    back = parse_persona_payload(to_card_v3(spec))
    assert back.voice == {"id": "v"} and back.slug == "bo-2"


def test_cleared_voice_is_not_resurrected_from_stale_extension():
    spec = parse_persona_payload(v2_card())
    cleared = apply_patch(spec, {"voice": None, "slug": None})
    salon = to_card_v2(cleared)["data"]["extensions"]["salon"]
    assert salon == {"future": 7}
    assert parse_persona_payload(to_card_v2(cleared)).voice is None


# --- invalid input ----------------------------------------------------------------------


@pytest.mark.parametrize("payload", [[], "Ada", None, 3, b"{}"])
def test_non_dict_payload(payload):
    with pytest.raises(CardError, match="must be a JSON object"):
        parse_persona_payload(payload)


def test_unknown_salon_field_is_named_with_suggestion():
    with pytest.raises(CardError) as exc:
        parse_persona_payload({"name": "Ada", "descripton": "x", "zzz": 1})
    msg = str(exc.value)
    assert "'descripton'" in msg and "did you mean 'description'" in msg and "'zzz'" in msg


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"name": "Ada", "tags": ["ok", 3]}, "tags.1"),
        ({"name": 7}, "name"),
        ({"name": "Ada", "alternate_greetings": "hi"}, "alternate_greetings"),
        ({"name": "Ada", "extensions": []}, "extensions"),
        ({"name": "Ada", "creation_date": "yesterday"}, "creation_date"),
        ({"name": "Ada", "creation_date": True}, "creation_date"),
        ({"name": "Ada", "description": 1.5}, "description"),
        ({"name": "Ada", "slug": "Not A Slug"}, "slug"),
        ({"name": "Ada", "slug": "x" * 101}, "slug"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"description": "no name"}, "name"),
        (v2_card(tags=["ok", {"no": 1}]), "data.tags.1"),
        (v2_card(name=None), "data.name"),
        (v2_card(character_book="lore"), "data.character_book"),
    ],
)
def test_bad_fields_report_their_path(payload, path):
    with pytest.raises(CardError) as exc:
        parse_persona_payload(payload)
    assert str(exc.value).startswith("invalid persona:")
    assert f"{path}:" in str(exc.value)


def test_bad_salon_slug_in_card_extension():
    card = v2_card()
    card["data"]["extensions"]["salon"]["slug"] = "BAD SLUG"
    with pytest.raises(CardError, match=r"data\.slug"):
        parse_persona_payload(card)


def test_unsupported_spec_and_missing_data():
    with pytest.raises(CardError, match="unsupported card spec 'chara_card_v9'"):
        parse_persona_payload({"spec": "chara_card_v9", "data": {"name": "x"}})
    with pytest.raises(CardError, match="'data' object"):
        parse_persona_payload({"spec": "chara_card_v2", "spec_version": "2.0"})
    with pytest.raises(CardError, match="'data' object"):
        parse_persona_payload({"spec": "chara_card_v3", "data": ["x"]})


# --- slugify ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Captain Ada!", "captain-ada"),
        ("  --Hello,   World--  ", "hello-world"),
        ("Ångström Ünïcode", "angstrom-unicode"),
        ("R2-D2", "r2-d2"),
        ("日本語", "persona"),
        ("", "persona"),
        ("!!!", "persona"),
        ("a" * 150, "a" * 100),
    ],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_slugify_truncation_never_ends_with_hyphen():
    slug = slugify("a" * 99 + " bcd")
    assert slug == "a" * 99 and len(slug) <= 100


def test_resolved_slug():
    assert PersonaSpec(name="Captain Ada!").resolved_slug == "captain-ada"
    assert PersonaSpec(name="Captain Ada!", slug="cap").resolved_slug == "cap"


# --- apply_patch ------------------------------------------------------------------------


def test_apply_patch_updates_and_validates():
    spec = parse_persona_payload(v2_card())
    patched = apply_patch(spec, {"description": "new", "tags": ["x"], "name": " Ada L "})
    assert (patched.description, patched.tags, patched.name) == ("new", ["x"], "Ada L")
    assert patched.character_book == BOOK and patched.voice == spec.voice
    assert spec.description == "A mathematician."  # original untouched


def test_apply_patch_is_shallow():
    spec = parse_persona_payload(v2_card())
    patched = apply_patch(spec, {"extensions": {"only": 1}})
    assert patched.extensions == {"only": 1}


def test_apply_patch_errors():
    spec = PersonaSpec(name="Ada")
    with pytest.raises(CardError, match="'colour'"):
        apply_patch(spec, {"colour": "red"})
    with pytest.raises(CardError, match="name"):
        apply_patch(spec, {"name": ""})
    with pytest.raises(CardError, match="tags"):
        apply_patch(spec, {"tags": "a,b"})
    with pytest.raises(CardError, match="JSON object"):
        apply_patch(spec, ["name"])  # type: ignore[arg-type]


# --- PNG --------------------------------------------------------------------------------


def test_png_write_read_round_trip_both_chunks():
    spec = parse_persona_payload(v3_card())
    png = write_png_card(v3_card())
    texts = text_chunks(png)
    assert len(texts["chara"]) == 1 and len(texts["ccv3"]) == 1
    chara = json.loads(base64.b64decode(texts["chara"][0]).decode("utf-8"))
    ccv3 = json.loads(base64.b64decode(texts["ccv3"][0]).decode("utf-8"))
    assert chara == to_card_v2(spec)
    assert ccv3 == to_card_v3(spec) == v3_card()
    assert read_png_card(png) == ccv3
    for ctype, payload, crc in chunks_of(png):
        assert crc == zlib.crc32(ctype + payload) & 0xFFFFFFFF, ctype
    assert chunks_of(png)[-1][0] == b"IEND"
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        assert img.size == (1, 1)


def test_png_non_ascii_text_survives():
    png = write_png_card({"name": "Zoë 🌙", "first_mes": "こんにちは"})
    spec = parse_persona_payload(read_png_card(png))
    assert (spec.name, spec.first_mes) == ("Zoë 🌙", "こんにちは")


def test_png_write_into_existing_image_keeps_other_chunks_and_replaces_cards():
    base = plain_png(Comment="keep me", chara="b2xk")  # stale chara chunk
    once = write_png_card({"name": "First"}, base)
    twice = write_png_card({"name": "Second"}, once)
    texts = text_chunks(twice)
    assert texts["Comment"] == ["keep me"]
    assert len(texts["chara"]) == 1 and len(texts["ccv3"]) == 1
    assert read_png_card(twice)["data"]["name"] == "Second"
    kept = [c for c in chunks_of(base) if c[0] in (b"IHDR", b"IDAT")]
    assert [c for c in chunks_of(twice) if c[0] in (b"IHDR", b"IDAT")] == kept
    with Image.open(io.BytesIO(twice)) as img:
        assert img.size == (2, 3) and img.convert("RGB").getpixel((1, 2)) == (10, 20, 30)


def test_png_write_converts_jpeg_and_rejects_garbage_image():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="JPEG")
    png = write_png_card({"name": "J"}, buf.getvalue())
    assert png.startswith(SIG) and read_png_card(png)["data"]["name"] == "J"
    with pytest.raises(CardError, match="not a readable image"):
        write_png_card({"name": "J"}, b"definitely not an image")


def test_png_write_validates_card():
    with pytest.raises(CardError, match="invalid persona"):
        write_png_card({"name": ""})


@pytest.mark.parametrize("ccv3_first", [True, False])
def test_ccv3_preferred_over_chara(ccv3_first):
    chara = chunk(b"tEXt", b"chara\0" + b64json(v2_card(name="From V2")))
    ccv3 = chunk(b"tEXt", b"ccv3\0" + b64json({**v3_card(), "data": {"name": "From V3"}}))
    png = png_with(*((ccv3, chara) if ccv3_first else (chara, ccv3)))
    assert read_png_card(png)["data"]["name"] == "From V3"


def test_chara_only_and_fallback_when_ccv3_broken():
    only = png_with(chunk(b"tEXt", b"chara\0" + b64json(v2_card())))
    assert read_png_card(only)["spec"] == "chara_card_v2"
    broken = png_with(
        chunk(b"tEXt", b"ccv3\0!!!not base64!!!"),
        chunk(b"tEXt", b"chara\0" + b64json(v2_card(name="Fallback"))),
    )
    assert read_png_card(broken)["data"]["name"] == "Fallback"


def test_ztxt_and_itxt_chunks_are_read():
    ztxt = chunk(b"zTXt", b"chara\0\0" + zlib.compress(b64json(v2_card(name="Z"))))
    assert read_png_card(png_with(ztxt))["data"]["name"] == "Z"
    itxt = chunk(b"iTXt", b"chara\0\0\0en\0\0" + b64json(v2_card(name="I")))
    assert read_png_card(png_with(itxt))["data"]["name"] == "I"
    itxt_z = chunk(b"iTXt", b"ccv3\0\1\0\0\0" + zlib.compress(b64json(v3_card())))
    assert read_png_card(png_with(itxt_z))["spec"] == "chara_card_v3"


def test_png_without_card_chunk():
    with pytest.raises(CardError, match="no character card"):
        read_png_card(plain_png(Comment="hello"))


@pytest.mark.parametrize("data", [b"", b"garbage bytes", b"GIF89a....", "not bytes"])
def test_not_a_png(data):
    with pytest.raises(CardError, match="PNG"):
        read_png_card(data)


def test_truncated_png():
    png = write_png_card({"name": "T"})
    with pytest.raises(CardError, match="truncated"):
        read_png_card(png[:40])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"%%%% not base64 %%%%", "not valid base64"),
        (base64.b64encode(b"not json at all"), "not valid JSON"),
        (base64.b64encode(b"\xff\xfe\xfd"), "UTF-8"),
        (b64json(["a", "list"]), "JSON object"),
    ],
)
def test_bad_card_chunk_content(value, message):
    png = png_with(chunk(b"tEXt", b"chara\0" + value))
    with pytest.raises(CardError, match=message) as exc:
        read_png_card(png)
    assert "'chara'" in str(exc.value)


def test_unpadded_base64_and_plain_json_are_tolerated():
    unpadded = b64json(v2_card(name="NoPad")).rstrip(b"=")
    assert read_png_card(png_with(chunk(b"tEXt", b"chara\0" + unpadded)))["data"]["name"] == (
        "NoPad"
    )
    plain = json.dumps(v2_card(name="Plain")).encode()
    assert read_png_card(png_with(chunk(b"tEXt", b"chara\0" + plain)))["data"]["name"] == "Plain"


# --- files ------------------------------------------------------------------------------


def test_load_card_file_variants(tmp_path):
    png_path = tmp_path / "ada.png"
    png_path.write_bytes(write_png_card(v2_card()))
    assert load_card_file(png_path).voice == {"id": "en-1", "rate": 1.1}

    json_path = tmp_path / "ada.json"
    json_path.write_text(json.dumps(v3_card()), encoding="utf-8")
    assert load_card_file(str(json_path)).nickname == "Countess"

    bom_path = tmp_path / "bom.json"
    bom_path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"name": "Bom"}).encode())
    assert load_card_file(bom_path).name == "Bom"

    sniffed = tmp_path / "card.bin"
    sniffed.write_bytes(png_path.read_bytes())
    assert load_card_file(sniffed).name == "Ada"

    other = tmp_path / "card.txt"
    other.write_text(json.dumps({"name": "Txt"}))
    assert load_card_file(other).name == "Txt"


def test_load_card_file_errors(tmp_path):
    with pytest.raises(CardError, match=r"cannot read missing\.png"):
        load_card_file(tmp_path / "missing.png")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(CardError, match=r"bad\.json is neither"):
        load_card_file(bad_json)
    fake_png = tmp_path / "fake.png"
    fake_png.write_text('{"name": "x"}')
    with pytest.raises(CardError, match="not a PNG"):
        load_card_file(fake_png)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"name": "x", "bogus": 1}')
    with pytest.raises(CardError, match="'bogus'"):
        load_card_file(wrong)


def test_apply_patch_does_not_alias_patch_values():
    patch = {"extensions": {"deep": {"list": [1]}}}
    patched = apply_patch(PersonaSpec(name="Ada"), patch)
    patch["extensions"]["deep"]["list"].append(2)
    assert patched.extensions == {"deep": {"list": [1]}}
