/** One logger per component, one line per event, key=value, levels set by --log-level. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

let level: LogLevel = (process.env.DFS_LOG_LEVEL as LogLevel) in ORDER ? (process.env.DFS_LOG_LEVEL as LogLevel) : "info";
let threshold: number = ORDER[level];
let sink: (line: string) => void = (line) => process.stderr.write(line + "\n");

export function setLogLevel(to: LogLevel): void {
  level = to;
  threshold = ORDER[to];
}

/** The level in force, for child processes to use the same. */
export function logLevel(): LogLevel {
  return level;
}

/** Replaces where log lines go (the REPL keeps its own output clean by sending them to a file or nowhere). */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
}

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

function fmt(value: unknown): string {
  if (value instanceof Error) value = value.message;
  const s = typeof value === "string" ? value : JSON.stringify(value);
  return s !== undefined && /[\s"=]/.test(s) ? JSON.stringify(s) : String(s);
}

export function logger(component: string, node = ""): Logger {
  const emit = (level: LogLevel, event: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < threshold) return;
    let line = `${new Date().toISOString()} ${level} ${component}${node ? ` node=${node}` : ""} ${event}`;
    if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${fmt(v)}`;
    sink(line);
  };
  return {
    debug: (e, f) => emit("debug", e, f),
    info: (e, f) => emit("info", e, f),
    warn: (e, f) => emit("warn", e, f),
    error: (e, f) => emit("error", e, f),
    child: (c) => logger(`${component}:${c}`, node),
  };
}
