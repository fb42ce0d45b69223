import assert from "node:assert/strict";
import {
  STAT_CACHE_ENTRIES,
  STAT_CACHE_TTL_MS,
  StatCache,
  statKey,
} from "../roles/master/stat_cache.ts";

Deno.test("stat cache: a positive answer is reused for the TTL, then asked again", () => {
  const c = new StatCache(1000, 8);
  const k = statKey("ab", "alice");
  assert.equal(c.get(k, 0), undefined);
  c.put(k, 42, 100);
  assert.equal(c.get(k, 100), 42);
  assert.equal(c.get(k, 1099), 42);
  assert.equal(c.get(k, 1100), undefined, "expired at the TTL");
  assert.equal(c.size, 0, "an expired entry is dropped");
  c.put(k, 42, 2000);
  assert.equal(c.get(k, 1999), undefined, "a clock that went back does not extend an entry");
});

Deno.test("stat cache: owners are separate keys (alice's file is not bob's)", () => {
  const c = new StatCache();
  c.put(statKey("ab", "alice"), 7, 0);
  assert.equal(c.get(statKey("ab", "bob"), 0), undefined);
  assert.equal(c.get(statKey("ab", ""), 0), undefined);
  assert.equal(c.get(statKey("ab", "alice"), 0), 7);
});

Deno.test("stat cache: bounded, the least recently stored entry goes first", () => {
  const c = new StatCache(STAT_CACHE_TTL_MS, 3);
  for (const id of ["a", "b", "c"]) c.put(statKey(id, ""), 1, 0);
  c.put(statKey("a", ""), 2, 1); // refreshed: now the newest
  c.put(statKey("d", ""), 1, 1);
  assert.equal(c.size, 3);
  assert.equal(c.get(statKey("b", ""), 1), undefined, "b was the oldest");
  assert.equal(c.get(statKey("a", ""), 1), 2);
  assert.equal(c.get(statKey("c", ""), 1), 1);
  assert.equal(c.get(statKey("d", ""), 1), 1);
  assert.ok(STAT_CACHE_ENTRIES >= 1 && STAT_CACHE_TTL_MS > 0);
  assert.throws(() => new StatCache(-1, 1), RangeError);
  assert.throws(() => new StatCache(1, 0), RangeError);
});
