import { setFlagsFromString } from "node:v8";

/**
 * For the commands that list a store (list, status, prune): a listing of 10,000 backups holds some 40,000 small
 * objects that all live until it is done. V8 doubles its young generation each time that much survives a
 * collection, up to 32 MB, which made most of the difference between 120 and 150 MB of peak memory. Keeping the
 * young generation at its starting size moves such objects to the old generation sooner, at no measurable cost in
 * time (docs/benchmarks.md, "Listing 10,000 backups"). Only the growth factor changes, which V8 reads each time it
 * would grow the space; 1 means "do not grow".
 */
export function keepYoungGenerationSmall(): void {
  setFlagsFromString("--semi-space-growth-factor=1");
}
