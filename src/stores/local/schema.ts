import * as z from "zod";

export const localStoreSchema = z.strictObject({
  type: z.literal("local"),
  path: z.string().min(1).describe("the directory that holds the backups"),
});
export type LocalStoreOptions = z.infer<typeof localStoreSchema>;
