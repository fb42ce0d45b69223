/**
 * A small Prometheus metrics registry and its text exposition format (version 0.0.4:
 * https://prometheus.io/docs/instrumenting/exposition_formats/).
 *
 * Bounded by construction: every metric is declared once, with its label names AND every value
 * each label may take, so a node's series are a fixed set (at most MAX_SERIES_PER_METRIC per
 * metric) however much traffic or hostile input it sees; using an undeclared label value is a
 * bug and throws. Every series exists from the start at 0, so `increase()` over a scrape that
 * saw the first event is exact.
 *
 * Why not prom-client: its defaults lean on Node's cluster, perf_hooks and v8 modules, it would
 * have to travel in the bundle and the single file (scripts/package.sh) and through the offline
 * npm setup, and it does not bound label values; what dsys needs is this one file.
 */

/** Most series one metric may have (the product of its labels' value counts). */
export const MAX_SERIES_PER_METRIC = 256;

/** Content-Type of the text format. */
export const TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Latency buckets, seconds: 0.5 ms to 60 s. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/** Run-time buckets, seconds: 10 ms to 1 h. */
export const RUN_TIME_BUCKETS_SECONDS: readonly number[] = [
  0.01,
  0.05,
  0.1,
  0.5,
  1,
  5,
  10,
  30,
  60,
  300,
  600,
  1800,
  3600,
];

const METRIC_NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Each label's name and every value it may take. */
export type LabelSpec = Readonly<Record<string, readonly string[]>>;

/** One series' label values, by label name. */
export type Labels = Readonly<Record<string, string>>;

/** A bug in how a metric is declared or used (never caused by network input). */
export class MetricsError extends Error {
  constructor(message: string) {
    super(`MetricsError: ${message}`);
    this.name = "MetricsError";
  }
}

function escapeHelp(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** A sample value as the text format writes it (Go's ParseFloat reads all of these). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** `{a="x",b="y"}` (or "" with no labels). */
function labelText(pairs: readonly (readonly [string, string])[]): string {
  if (pairs.length === 0) return "";
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`;
}

/** Every combination of the spec's label values, in declaration order. */
function combinations(spec: LabelSpec): string[][] {
  let out: string[][] = [[]];
  for (const values of Object.values(spec)) {
    out = out.flatMap((prefix) => values.map((v) => [...prefix, v]));
  }
  return out;
}

/** The series of one metric: a fixed map from label values to a value slot. */
abstract class Metric<S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  #spec: LabelSpec;
  #series = new Map<string, { values: string[]; slot: S }>();

  constructor(name: string, help: string, spec: LabelSpec, reserved: readonly string[]) {
    if (!METRIC_NAME_RE.test(name)) throw new MetricsError(`bad metric name ${name}`);
    this.name = name;
    this.help = help;
    this.#spec = spec;
    this.labelNames = Object.keys(spec);
    for (const l of this.labelNames) {
      if (!LABEL_NAME_RE.test(l) || l.startsWith("__") || reserved.includes(l)) {
        throw new MetricsError(`${name}: bad label name ${l}`);
      }
      const values = spec[l];
      if (values.length === 0 || new Set(values).size !== values.length) {
        throw new MetricsError(`${name}: label ${l} needs distinct values`);
      }
    }
    const all = combinations(spec);
    if (all.length > MAX_SERIES_PER_METRIC) {
      throw new MetricsError(`${name}: ${all.length} series > ${MAX_SERIES_PER_METRIC}`);
    }
    for (const values of all) this.#series.set(values.join("\0"), { values, slot: this.init() });
  }

  /** A new series' value slot. */
  protected abstract init(): S;

  /** The slot of the series `labels` names; throws on a label or value not declared. */
  protected slot(labels: Labels | undefined): S {
    const given = labels ?? {};
    const keys = Object.keys(given);
    if (keys.length !== this.labelNames.length) {
      throw new MetricsError(`${this.name}: labels ${keys} do not match ${this.labelNames}`);
    }
    const values = this.labelNames.map((l) => {
      const v = given[l];
      if (v === undefined || !this.#spec[l].includes(v)) {
        throw new MetricsError(`${this.name}: ${l}=${v} is not a declared value`);
      }
      return v;
    });
    return this.#series.get(values.join("\0"))!.slot;
  }

  /** Every series, in declaration order: its label pairs and slot. */
  protected *series(): Generator<[readonly (readonly [string, string])[], S]> {
    for (const { values, slot } of this.#series.values()) {
      yield [this.labelNames.map((l, i) => [l, values[i]] as const), slot];
    }
  }

  /** The metric's lines in the text format. */
  abstract render(): string[];

  protected header(type: string): string[] {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${type}`];
  }
}

/** A value that only goes up (name ends in `_total`); resets only when the process restarts. */
export class Counter extends Metric<{ v: number }> {
  constructor(name: string, help: string, spec: LabelSpec = {}) {
    if (!name.endsWith("_total")) throw new MetricsError(`counter ${name} must end in _total`);
    super(name, help, spec, []);
  }
  protected init() {
    return { v: 0 };
  }
  /** Adds `n` (>= 0) to the series `labels` names. */
  inc(labels?: Labels, n = 1): void {
    if (!(n >= 0) || !Number.isFinite(n)) throw new MetricsError(`${this.name}: inc by ${n}`);
    this.slot(labels).v += n;
  }
  /**
   * Sets a counter kept elsewhere (read at scrape time). A lower value than before (the source
   * was reset, e.g. a FUSE mount's counters read as 0 once it is unmounted) is ignored: the
   * counter never goes back within a process, and a scrape never fails over it.
   */
  setTotal(v: number, labels?: Labels): void {
    if (Number.isNaN(v)) throw new MetricsError(`${this.name}: set to NaN`);
    const s = this.slot(labels);
    if (v > s.v) s.v = v;
  }
  /** The current value of one series. */
  get(labels?: Labels): number {
    return this.slot(labels).v;
  }
  render(): string[] {
    const out = this.header("counter");
    for (const [l, s] of this.series()) out.push(`${this.name}${labelText(l)} ${formatValue(s.v)}`);
    return out;
  }
}

/** A value that goes up and down. */
export class Gauge extends Metric<{ v: number }> {
  constructor(name: string, help: string, spec: LabelSpec = {}) {
    super(name, help, spec, []);
  }
  protected init() {
    return { v: 0 };
  }
  /** Sets the series `labels` names. */
  set(v: number, labels?: Labels): void {
    this.slot(labels).v = v;
  }
  /** Adds `n` (may be negative). */
  add(n: number, labels?: Labels): void {
    this.slot(labels).v += n;
  }
  /** The current value of one series. */
  get(labels?: Labels): number {
    return this.slot(labels).v;
  }
  render(): string[] {
    const out = this.header("gauge");
    for (const [l, s] of this.series()) out.push(`${this.name}${labelText(l)} ${formatValue(s.v)}`);
    return out;
  }
}

interface HistogramSlot {
  /** Observations per bucket (not cumulative; the last is the +Inf bucket's own). */
  counts: number[];
  sum: number;
  count: number;
}

/** Observations counted into fixed buckets (cumulative `_bucket{le=…}`, `_sum`, `_count`). */
export class Histogram extends Metric<HistogramSlot> {
  readonly buckets: readonly number[];
  constructor(name: string, help: string, buckets: readonly number[], spec: LabelSpec = {}) {
    super(name, help, spec, ["le"]);
    if (
      buckets.length === 0 || buckets.some((b, i) => !Number.isFinite(b) || b <= buckets[i - 1])
    ) {
      throw new MetricsError(`${name}: buckets must be finite and increasing`);
    }
    this.buckets = buckets;
    // The slots were made by the base constructor before `buckets` was set: size them now.
    for (const [, s] of this.series()) s.counts = new Array(buckets.length + 1).fill(0);
  }
  protected init(): HistogramSlot {
    return { counts: [], sum: 0, count: 0 };
  }
  /** Counts one observation `v` (e.g. seconds) in the series `labels` names. */
  observe(v: number, labels?: Labels): void {
    if (Number.isNaN(v)) throw new MetricsError(`${this.name}: observed NaN`);
    const s = this.slot(labels);
    let i = this.buckets.findIndex((b) => v <= b);
    if (i < 0) i = this.buckets.length;
    s.counts[i]++;
    s.sum += v;
    s.count++;
  }
  /** Observations so far in one series. */
  count(labels?: Labels): number {
    return this.slot(labels).count;
  }
  render(): string[] {
    const out = this.header("histogram");
    for (const [l, s] of this.series()) {
      let cumulative = 0;
      const bounds = [...this.buckets.map(formatValue), "+Inf"];
      bounds.forEach((le, i) => {
        cumulative += s.counts[i];
        out.push(`${this.name}_bucket${labelText([...l, ["le", le]])} ${cumulative}`);
      });
      out.push(`${this.name}_sum${labelText(l)} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${labelText(l)} ${s.count}`);
    }
    return out;
  }
}

/** A node's metrics: declared once at start-up, rendered on every scrape. */
export class Registry {
  #metrics = new Map<string, Metric<unknown>>();
  /** Every sample name in use (a histogram takes its _bucket, _sum and _count too). */
  #names = new Set<string>();
  #collectors: (() => void)[] = [];
  /** The last error a collector threw (see {@link render}); undefined if none ever did. */
  lastCollectError: unknown = undefined;

  /** Declares a counter. */
  counter(name: string, help: string, spec?: LabelSpec): Counter {
    return this.#add(new Counter(name, help, spec));
  }
  /** Declares a gauge. */
  gauge(name: string, help: string, spec?: LabelSpec): Gauge {
    return this.#add(new Gauge(name, help, spec));
  }
  /** Declares a histogram with the given bucket upper bounds. */
  histogram(name: string, help: string, buckets: readonly number[], spec?: LabelSpec): Histogram {
    return this.#add(new Histogram(name, help, buckets, spec));
  }
  /**
   * Runs `fn` before each render: it copies state kept elsewhere (a table's counts, a Raft
   * term) into gauges and counters, so hot paths need no hooks for what can be read.
   */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  /**
   * The whole registry in the text format (ends with a newline). A collector that throws (a bug)
   * leaves its series as they were, and the error in {@link lastCollectError}.
   */
  render(): string {
    for (const c of this.#collectors) {
      try {
        c();
      } catch (e) {
        this.lastCollectError = e;
      }
    }
    const lines: string[] = [];
    for (const m of this.#metrics.values()) lines.push(...m.render());
    return lines.join("\n") + "\n";
  }

  #add<M extends Metric<unknown>>(m: M): M {
    // A histogram's _bucket/_sum/_count must not collide with another metric's name either.
    const names = m instanceof Histogram
      ? [m.name, `${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`]
      : [m.name];
    for (const n of names) {
      if (this.#names.has(n)) throw new MetricsError(`metric ${n} declared twice`);
    }
    for (const n of names) this.#names.add(n);
    this.#metrics.set(m.name, m);
    return m;
  }
}
