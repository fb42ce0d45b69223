/**
 * Child process of tests/fuse_mount_test.ts: mounts `<mountpoint>` serving one file from a fake
 * storage, prints "ready", then serves until killed (the test SIGKILLs it to leave a dead mount).
 * Usage: deno run -A tests/fuse_child_server.ts <mountpoint> <cacheDir> <storeDir> <idHex> <size>
 * @module
 */
import { FuseMount } from "../fuse/mod.ts";
import { FakeStorage } from "./fuse_helpers.ts";

const [mountpoint, cacheDir, storeDir, idHex, size] = Deno.args;
const store = new FakeStorage(storeDir);
const m = await FuseMount.mount({ mountpoint, cacheDir, fetch: store.fetch });
const id = Uint8Array.from(idHex.match(/../g)!, (h) => parseInt(h, 16));
m.addFile({ path: "job/data.bin", id, size: Number(size) });
console.log("ready");
