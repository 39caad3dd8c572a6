// Diagnostic for bench/run.mjs, preloaded with `node --import`: raises Node's default stream high-water mark from
// 16 KiB to 1 MiB, so that dbkeep can be measured with larger buffers between its stages without changing src/.
import { setDefaultHighWaterMark } from "node:stream";

setDefaultHighWaterMark(false, 1024 * 1024);
