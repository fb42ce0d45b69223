/**
 * Headless Chromium (Debian's `chromium`) driven over the DevTools protocol for tests: open a
 * page, evaluate script in it, take a screenshot. Only what the dashboard test needs; no
 * library (the protocol is JSON over one WebSocket).
 * @module
 */
import { within } from "./wait.ts";

/** A running browser with one page. */
export interface Browser {
  /** Navigates the page to `url` (resolves once the navigation was committed). */
  goto(url: string): Promise<void>;
  /** Evaluates `expression` in the page; its value (JSON-serialisable) or a thrown error. */
  evaluate<T>(expression: string): Promise<T>;
  /** A PNG of the page as it is now. */
  screenshot(): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Removes a profile directory, retrying while Chromium's last helpers may still write to it. */
async function removeProfile(dir: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      await Deno.remove(dir, { recursive: true });
      return;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await Deno.remove(dir, { recursive: true }); // fails loudly: a leftover directory
}

/** Starts `chromium --headless` with a temp profile; resolves once its page is connected. */
export async function startChromium(): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "dsys-chromium-" });
  const child = new Deno.Command("chromium", {
    args: [
      "--headless=new",
      // Root (as the suite runs) cannot use Chromium's setuid/namespace sandbox; the page is
      // our own dashboard on loopback.
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--remote-debugging-address=127.0.0.1",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "--window-size=1100,900",
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const kill = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await removeProfile(profile);
  };
  let ws: WebSocket;
  const stderr: string[] = [];
  try {
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…" names the port it bound.
    const port = await within(
      60_000,
      "chromium's DevTools port",
      (async () => {
        const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`chromium exited:\n${stderr.join("")}`);
          buf += value;
          stderr.push(value);
          const m = /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(buf);
          if (m) {
            (async () => {
              while (!(await reader.read().catch(() => ({ done: true }))).done) { /* drain */ }
            })();
            return Number(m[1]);
          }
        }
      })(),
    );
    const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
      type: string;
      webSocketDebuggerUrl: string;
    }[];
    const page = list.find((t) => t.type === "page");
    if (!page) throw new Error("chromium has no page");
    ws = new WebSocket(page.webSocketDebuggerUrl);
    await within(
      30_000,
      "the DevTools socket",
      new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error("DevTools socket failed"));
      }),
    );
  } catch (e) {
    await kill();
    throw e;
  }
  let nextId = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data as string);
    const w = m.id !== undefined ? waiting.get(m.id) : undefined;
    if (!w) return;
    waiting.delete(m.id);
    if (m.error) w.reject(new Error(`DevTools: ${JSON.stringify(m.error)}`));
    else w.resolve(m.result);
  };
  const call = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> => {
    const id = nextId++;
    ws.send(JSON.stringify({ id, method, params }));
    return within(
      30_000,
      `DevTools ${method}`,
      new Promise<unknown>((resolve, reject) => {
        waiting.set(id, { resolve, reject });
      }),
    ) as Promise<T>;
  };
  await call("Page.enable");
  return {
    async goto(url) {
      const r = await call<{ errorText?: string }>("Page.navigate", { url });
      if (r.errorText) throw new Error(`navigating to ${url}: ${r.errorText}`);
    },
    async evaluate<T>(expression: string): Promise<T> {
      const r = await call<{
        result: { value?: T };
        exceptionDetails?: { text: string; exception?: { description?: string } };
      }>("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
      if (r.exceptionDetails) {
        throw new Error(
          `in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`,
        );
      }
      return r.result.value as T;
    },
    async screenshot() {
      const r = await call<{ data: string }>("Page.captureScreenshot", { format: "png" });
      return Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
    },
    async close() {
      // Browser.close ends every Chromium process (a SIGKILL of the first one alone can leave
      // its helpers writing to the profile for a moment); SIGKILL if it does not.
      const exited = await within(
        10_000,
        "chromium to exit",
        call("Browser.close").catch(() => {}).then(() => child.status),
      ).then(() => true, () => false);
      try {
        ws.close();
      } catch { /* closed */ }
      if (exited) await removeProfile(profile);
      else await kill();
    },
  };
}
