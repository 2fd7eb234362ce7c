// Times ONNX Runtime (npm onnxruntime-node, CPU) on one input tensor:
// prints one JSON line {median_ms, min_ms, iters} and writes the logits.
// Usage: node ort_worker.mjs MODEL.onnx INPUT.f32 BATCH ITERS LOGITS_OUT THREADS
import fs from "node:fs";
import ort from "onnxruntime-node";

const [model, inp, b, it, out, th] = process.argv.slice(2);
const batch = Number(b), iters = Number(it), threads = Number(th || 2);
const session = await ort.InferenceSession.create(model, {
  intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: "all",
});
const buf = fs.readFileSync(inp);
const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
const side = Math.round(Math.sqrt(data.length / batch / 3));
const x = new ort.Tensor("float32", data, [batch, 3, side, side]);
let y = await session.run({ pixel_values: x }); // warm-up
const times = [];
for (let i = 0; i < iters; i++) {
  const t0 = performance.now();
  y = await session.run({ pixel_values: x });
  times.push(performance.now() - t0);
}
fs.writeFileSync(out, Buffer.from(y.logits.data.buffer, y.logits.data.byteOffset, y.logits.data.byteLength));
times.sort((a, b) => a - b);
console.log(JSON.stringify({ median_ms: times[Math.floor(times.length / 2)], min_ms: times[0], iters }));
