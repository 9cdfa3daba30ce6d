import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { onFsync } from "../fsyncs.js";
import type { Router } from "../transport/actor.js";
import { traffic } from "../transport/traffic.js";

type Awaitable<T> = T | Promise<T>;
export interface Sample {
  labels?: Record<string, string>;
  value: number;
}
/** Reads the current values of one metric from a part of the process (a role, say) when Prometheus scrapes. */
export type Source = () => Awaitable<Sample[]>;

/** Latency buckets from 0.1 ms to 10 s: a loopback request takes well under a millisecond, a 64 MiB put seconds. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * One process's metrics in the Prometheus text format: the Node.js runtime's (memory, event-loop delay, CPU),
 * requests, traffic and fsyncs, and whatever each role of the process adds as a {@link Source}. Several nodes
 * of one process (`dfs local`) share a metric, told apart by a label.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"type" | "code">;
  private readonly latency: Histogram<"type">;
  private readonly sources = new Map<string, Source[]>();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // Gauges that prom-client names like counters, which Prometheus's own checker rejects.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(name);
    this.requests = new Counter({
      name: "dfs_requests_total", help: "Requests this process answered, by message type and result code (OK or the error code)",
      labelNames: ["type", "code"], registers: [this.registry],
    });
    this.latency = new Histogram({
      name: "dfs_request_duration_seconds", help: "Time from a request's arrival to its answer, by message type",
      labelNames: ["type"], buckets: LATENCY_BUCKETS, registers: [this.registry],
    });
    this.counter("dfs_received_bytes_total", "Message bytes received on all connections", [], () => [{ value: traffic.bytesIn }]);
    this.counter("dfs_sent_bytes_total", "Message bytes sent on all connections", [], () => [{ value: traffic.bytesOut }]);
    this.counter("dfs_received_messages_total", "Messages received on all connections", [], () => [{ value: traffic.framesIn }]);
    this.counter("dfs_sent_messages_total", "Messages sent on all connections", [], () => [{ value: traffic.framesOut }]);
    const fsyncs = new Histogram({
      name: "dfs_fsync_duration_seconds", help: "Duration of each fsync or fdatasync this process made (its _count is the number of fsyncs)",
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers: [this.registry],
    });
    onFsync((s) => fsyncs.observe(s));
  }

  /** Counts every request `router` answers. */
  observe(router: Router): void {
    router.observe((type, code, seconds) => {
      this.requests.inc({ type, code });
      this.latency.observe({ type }, seconds);
    });
  }

  /** A value that goes up and down, read from `source` at each scrape; another source under the same name adds its samples. */
  gauge(name: string, help: string, labelNames: string[], source: Source): void {
    this.add(name, source, (collect) => new Gauge({ name, help, labelNames, registers: [this.registry], collect }));
  }

  /** A total that only grows, kept by the code that counts it and read from `source` at each scrape. */
  counter(name: string, help: string, labelNames: string[], source: Source): void {
    this.add(name, source, (collect) => new Counter({ name, help, labelNames, registers: [this.registry], collect }));
  }

  private add(name: string, source: Source, make: (collect: () => Promise<void>) => Gauge | Counter): void {
    const known = this.sources.get(name);
    if (known) {
      known.push(source);
      return;
    }
    const sources = [source];
    this.sources.set(name, sources);
    const metric: Gauge | Counter = make(async () => {
      const samples = (await Promise.all(sources.map((s) => s()))).flat();
      metric.reset();
      for (const { labels = {}, value } of samples) {
        if (metric instanceof Gauge) metric.set(labels, value);
        else metric.inc(labels, value);
      }
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
