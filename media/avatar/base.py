"""The 3D avatar base: a persona becomes a glTF binary (GLB) model.

One small base, one module per implementation (:mod:`media.avatar.procedural`,
the embedded default that builds a stylized figure from the persona's
attributes), chosen by configuration through :mod:`media.avatar.registry`.
Avatars made elsewhere (Ready Player Me, VRoid Studio) come in through
:mod:`media.avatar.importer`, which checks the bytes and describes them.

Every builder returns ``model/gltf-binary``: one self-contained ``.glb``
file (JSON and buffers in one, no external textures) that three.js,
Babylon.js, ``<model-viewer>``, Blender and game engines load as is.
"""

from __future__ import annotations

from media.generation import GeneratorCapabilities, MediaGenerator, MediaKind

GLB_MIME = "model/gltf-binary"
INSTALL_HINT = "pip install 'salon[avatar]'"

# The animation clips a builder knows how to add (MediaRequest.options["animations"]).
CLIPS = ("idle", "talk")


class AvatarBuilder(MediaGenerator):
    """Base of the avatar builders: ``generate`` returns a GLB (:data:`GLB_MIME`).

    ``request.persona`` (name, attributes) decides the look; ``request.seed``
    varies it; ``request.options["animations"]`` lists the clips to include
    (default: all of :data:`CLIPS`). The prompt is optional.
    """

    name = "avatar"
    kind: MediaKind = "avatar"
    capabilities = GeneratorCapabilities(mimes=(GLB_MIME,))
