// The deadline wait the node test suites (tests/sdk, tests/ui) share.

/*
 * Polls check() (async allowed) every 50 ms until it returns something
 * truthy, and resolves to that; rejects at the deadline (default 20 s) with
 * `what` (a string or a function returning one). An exception from check()
 * ends the wait at once.
 */
export async function waitFor(check, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      const text = typeof what === "function" ? what() : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${text}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
