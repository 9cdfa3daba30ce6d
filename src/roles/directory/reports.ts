import { DfsError } from "../../protocol/errors.js";
import type { Peer } from "../../transport/actor.js";

/** Storage nodes whose chunk report is under way on a connection to this process: node id -> report number and connection. */
export class Reports {
  private readonly open = new Map<string, { report: number; peer: Peer }>();

  start(node: string, report: number, peer: Peer): void {
    this.open.set(node, { report, peer });
  }

  /** The node a page of report `report` on `peer` belongs to; BAD_REQUEST unless it registered on that connection with that number. */
  check(node: string | undefined, peer: Peer, report: number): string {
    const r = node ? this.open.get(node) : undefined;
    if (!node || !r || r.peer !== peer || r.report !== report) {
      throw new DfsError("BAD_REQUEST", "chunk report without a matching registration on this connection");
    }
    return node;
  }

  end(node: string): void {
    this.open.delete(node);
  }
}
