/** Message bytes and frames this process received and sent on all its connections, read by the metrics. */
export const traffic = { bytesIn: 0, bytesOut: 0, framesIn: 0, framesOut: 0 };
