import { XMLParser } from "fast-xml-parser";
import { S3Error } from "./errors.js";

/** An element: its name and either text or child elements (a child list may repeat names, as S3's lists do). */
export type Node = string | number | boolean | null | undefined | Element[] | { [name: string]: Node };
export interface Element {
  [name: string]: Node;
}

const S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/";

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!);
}

function render(name: string, value: Node): string {
  if (value === undefined) return "";
  if (value === null) return `<${name}/>`;
  if (Array.isArray(value)) return value.map((v) => render(name, v as Node)).join("");
  if (typeof value === "object") return `<${name}>${Object.entries(value).map(([k, v]) => render(k, v)).join("")}</${name}>`;
  return `<${name}>${escapeXml(String(value))}</${name}>`;
}

/**
 * A response document: `<?xml?>` then the root element in S3's namespace. Object fields become child
 * elements in order; an array value repeats its element name (`Contents: [a, b]` gives two `<Contents>`).
 */
export function xmlDocument(root: string, body: Element): string {
  const inner = Object.entries(body).map(([k, v]) => render(k, v)).join("");
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="${S3_NS}">${inner}</${root}>`;
}

const PREDEFINED: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/**
 * XML's own references and no others, in one pass: the five predefined entities and character references
 * (`&#34;`, `&#x22;`), which encoders use freely (Go's escapes every quote, so rclone sends ETags as
 * `&#34;...&#34;`). A reference to a character XML does not allow is malformed.
 */
function decodeReferences(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z]+);/g, (whole, ref: string) => {
    if (ref[0] !== "#") {
      const named = PREDEFINED[ref];
      if (named === undefined) throw new Error(`undefined entity ${whole}`);
      return named;
    }
    const cp = ref[1] === "x" ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    const allowed = cp === 0x9 || cp === 0xa || cp === 0xd || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
    if (!allowed) throw new Error(`character reference ${whole} names no XML character`);
    return String.fromCodePoint(cp);
  });
}

const references = { decode: decodeReferences, reset() {}, setXmlVersion() {}, addInputEntities() {}, setExternalEntities() {} };

const parser = new XMLParser({
  ignoreAttributes: true, parseTagValue: false, isArray: (name) => ["Part", "Object"].includes(name), entityDecoder: references,
  // A key's spaces are part of it (" a" and "a" are two objects): callers trim the fields where spaces mean nothing.
  trimValues: false,
});

/** Reads a request body's XML; malformed XML is the client's fault. */
export function parseXml(text: string): Record<string, unknown> {
  try {
    return parser.parse(text, true) as Record<string, unknown>;
  } catch {
    throw new S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.", 400);
  }
}

export function errorDocument(err: S3Error, resource: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n${render("Error", { Code: err.code, Message: err.message, ...err.extra, Resource: resource, RequestId: requestId })}`;
}
