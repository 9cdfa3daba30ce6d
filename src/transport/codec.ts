import { Packr } from "msgpackr";
import { DfsError, isErrorCode, type ErrorCode } from "../protocol/errors.js";

/** Frame kinds of the envelope `[kind, id, type, body]`. */
export const Kind = { Request: 0, Reply: 1, Error: 2, Tell: 3 } as const;
export type KindValue = (typeof Kind)[keyof typeof Kind];

export type Envelope =
  | { kind: typeof Kind.Request; id: number; type: string; body: unknown }
  | { kind: typeof Kind.Reply; id: number; body: unknown }
  | { kind: typeof Kind.Error; id: number; error: DfsError }
  | { kind: typeof Kind.Tell; type: string; body: unknown };

export interface WireError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

const MAX_TYPE_LENGTH = 64;
const MAX_ID = 2 ** 32;

// Records and structured clones are off: every peer must be able to decode a frame on its own,
// and a hostile peer must not be able to define structures we then keep in memory.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: "number" });

export function encode(env: Envelope): Buffer {
  switch (env.kind) {
    case Kind.Request:
      return packr.pack([env.kind, env.id, env.type, env.body]);
    case Kind.Reply:
      return packr.pack([env.kind, env.id, "", env.body]);
    case Kind.Error: {
      const wire: WireError = { code: env.error.code, message: env.error.message };
      if (env.error.details) wire.details = env.error.details;
      return packr.pack([env.kind, env.id, "", wire]);
    }
    case Kind.Tell:
      return packr.pack([env.kind, 0, env.type, env.body]);
  }
}

/** Binary bodies at least this large leave as a separate WebSocket fragment instead of being copied. */
const ZERO_COPY_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);

/**
 * Encodes a request or reply whose body carries a large `data` field without copying those bytes:
 * the envelope is packed with `data` last and empty, and its empty bin header is replaced by a bin32
 * header for the real length, so that header + data is exactly the msgpack of the whole envelope.
 * The two parts go out as fragments of one WebSocket message; the receiver decodes it as usual.
 */
export function encodeParts(env: Envelope): Buffer | [Buffer, Uint8Array] {
  const body = env.kind === Kind.Request || env.kind === Kind.Reply ? env.body : undefined;
  const data = (body as { data?: unknown } | null | undefined)?.data;
  if (!(data instanceof Uint8Array) || data.length < ZERO_COPY_BYTES || Object.getPrototypeOf(body) !== Object.prototype) {
    return encode(env);
  }
  const { data: _ignored, ...rest } = body as Record<string, unknown>;
  const head = encode({ ...env, body: { ...rest, data: EMPTY } } as Envelope);
  // msgpack of an empty bin is c4 00; it is the last thing in the frame since data is the last field.
  if (head[head.length - 2] !== 0xc4 || head[head.length - 1] !== 0x00) return encode(env);
  const out = Buffer.allocUnsafe(head.length + 3);
  head.copy(out, 0, 0, head.length - 2);
  out[head.length - 2] = 0xc6;
  out.writeUInt32BE(data.length, head.length - 1);
  return [out, data];
}

/**
 * Decodes and checks the envelope's shape. Throws DfsError BAD_REQUEST with `details.id` set
 * when the frame was recognisably a request, so the caller can answer it.
 */
export function decode(frame: Uint8Array): Envelope {
  let raw: unknown;
  try {
    raw = packr.unpack(frame);
  } catch (err) {
    throw new DfsError("BAD_REQUEST", "frame is not valid msgpack", { cause: err });
  }
  if (!Array.isArray(raw) || raw.length !== 4) throw new DfsError("BAD_REQUEST", "frame is not an envelope [kind, id, type, body]");
  const [kind, id, type, body] = raw as [unknown, unknown, unknown, unknown];
  if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= MAX_ID) {
    throw new DfsError("BAD_REQUEST", "envelope id must be a 32-bit unsigned integer");
  }
  const badType = typeof type !== "string" || type.length > MAX_TYPE_LENGTH;
  switch (kind) {
    case Kind.Request:
      if (badType || type === "") throw new DfsError("BAD_REQUEST", "request type must be a short string", { details: { id } });
      return { kind, id, type: type as string, body };
    case Kind.Tell:
      if (badType || type === "") throw new DfsError("BAD_REQUEST", "tell type must be a short string");
      return { kind, type: type as string, body };
    case Kind.Reply:
      return { kind, id, body };
    case Kind.Error:
      return { kind, id, error: toError(body) };
    default:
      throw new DfsError("BAD_REQUEST", "unknown envelope kind");
  }
}

function toError(body: unknown): DfsError {
  const wire = (body ?? {}) as Partial<WireError>;
  const code: ErrorCode = isErrorCode(wire.code) ? wire.code : "INTERNAL";
  const message = typeof wire.message === "string" ? wire.message.slice(0, 2000) : "remote error";
  const details = wire.details && typeof wire.details === "object" && !Array.isArray(wire.details) ? wire.details : undefined;
  return new DfsError(code, message, { details });
}
