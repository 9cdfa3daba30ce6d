/**
 * The cluster's X.509 material: a private CA and per-role certificates whose subject OU names the
 * role the TLS layer authorizes. Generated in-process so no openssl binary is needed.
 * @module
 */
export { ROLES, loadCerts, certIdentity, type Role, type CertMaterial } from "./load.js";
export { initCerts, issueCert } from "./generate.js";
