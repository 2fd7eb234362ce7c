// hf_client.mjs: drives a running vitserve with the real @huggingface/inference
// client (the npm package, unchanged), as people point it at an endpoint.
// Usage: node hf_client.mjs BASE_URL IMAGE_FILE
// Prints one JSON object: the answers for raw bytes (ArrayBuffer), a Blob,
// /models/{id}, a cached HF token sent while auth is off, and the error
// message the client raised for a non-image body.
import { readFileSync } from "node:fs";
import { InferenceClient } from "@huggingface/inference";

const [base, imagePath] = process.argv.slice(2);
const bytes = readFileSync(imagePath);
const out = {};

// 1. Raw bytes as an ArrayBuffer, no token.
const client = new InferenceClient();
const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
out.arraybuffer = await client.imageClassification({ endpointUrl: base + "/", data: ab });

// 2. A Blob (what browsers hand over), via client.endpoint().
out.blob = await client.endpoint(base + "/").imageClassification({
  data: new Blob([bytes], { type: "image/jpeg" }),
});

// 3. The model in the path, with a token the client sends on its own
//    (a cached HF token): must not be refused when the server has no keys.
const withToken = new InferenceClient("hf_cachedTokenThatServerDoesNotCheck");
out.models_path = await withToken.imageClassification({
  endpointUrl: base + "/models/some-org/some-model",
  data: new Blob([bytes]),
});

// 4. Error path: bytes that are no image.
try {
  await client.imageClassification({ endpointUrl: base + "/", data: new Blob(["not an image at all"]) });
  out.error = null;
} catch (e) {
  out.error = { name: e.name, message: String(e.message), status: e.httpResponse?.status ?? null,
                requestId: e.httpResponse?.requestId ?? null };
}
console.log(JSON.stringify(out));
