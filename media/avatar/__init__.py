"""3D avatars: one base (:mod:`media.avatar.base`), one module per builder, a registry,
and the importer for GLB/VRM files made elsewhere (:mod:`media.avatar.importer`).

Imports here stay light: trimesh and pygltflib load inside the procedural builder.
"""

from media.avatar.base import CLIPS, GLB_MIME, AvatarBuilder
from media.avatar.importer import describe_glb, import_avatar
from media.avatar.registry import create_avatar_builder, register

__all__ = [
    "CLIPS",
    "GLB_MIME",
    "AvatarBuilder",
    "create_avatar_builder",
    "describe_glb",
    "import_avatar",
    "register",
]
