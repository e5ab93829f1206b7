/**
 * Stands in for three.js's meshopt decoder inside the lazy <model-viewer> chunk.
 *
 * The real module compiles a WebAssembly decoder as soon as it is imported,
 * which the console's Content-Security-Policy (``script-src 'self'``, no
 * ``'wasm-unsafe-eval'``) refuses: an uncaught error in the browser console
 * each time the 3D preview opens. model-viewer only uses the decoder for
 * meshopt-compressed models after ``meshoptDecoderLocation`` is set, which the
 * console never does, and Salon's avatars are not meshopt-compressed; this
 * stub says "unsupported", so such a model fails to load with a message
 * instead of the page erroring.
 */
export const MeshoptDecoder = {
  supported: false,
  ready: Promise.resolve(),
  decodeVertexBuffer(): never {
    throw new Error('meshopt-compressed models are not supported by the console preview');
  },
  decodeIndexBuffer(): never {
    throw new Error('meshopt-compressed models are not supported by the console preview');
  },
  decodeIndexSequence(): never {
    throw new Error('meshopt-compressed models are not supported by the console preview');
  },
  decodeGltfBuffer(): never {
    throw new Error('meshopt-compressed models are not supported by the console preview');
  },
  useWorkers(): void {},
  decodeGltfBufferAsync(): Promise<never> {
    return Promise.reject(new Error('meshopt-compressed models are not supported by the console preview'));
  },
};
