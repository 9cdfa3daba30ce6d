import { WebSocket } from "ws";

/** A bare WebSocket to a dfs node, with a certificate but none of our channel's manners: it sends what it is told and can stop reading. */
export async function openRaw(url: string, tls: { ca: string; cert: string; key: string }): Promise<WebSocket> {
  const ws = new WebSocket(url, { ...tls, minVersion: "TLSv1.3" });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  return ws;
}
