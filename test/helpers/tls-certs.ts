import { execFileSync } from "node:child_process";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A certificate and its private key, as PEM files. */
export interface CertPair {
  cert: string;
  key: string;
}

/**
 * A private certificate authority and certificates for drills, made with openssl:
 * - `ca`: the CA a client is told to trust; `otherCa`: a second CA nobody trusts.
 * - `server`: signed by `ca`, for localhost and 127.0.0.1.
 * - `wrongCa`: the same names, signed by `otherCa` (an impostor with a certificate of its own).
 * - `wrongHost`: signed by `ca`, but for db.invalid only (a server of the right CA under another name).
 * - `client(cn)`: a client certificate signed by `ca` with that common name (PostgreSQL's cert auth maps it to the user).
 */
export interface TestPki {
  dir: string;
  ca: string;
  otherCa: string;
  server: CertPair;
  wrongCa: CertPair;
  wrongHost: CertPair;
  client(cn: string): CertPair;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function makeCa(dir: string, name: string, cn: string): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  openssl(
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "3", "-subj", `/CN=${cn}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    dir,
  );
  return { cert, key };
}

function issue(dir: string, name: string, ca: { cert: string; key: string }, cn: string, san: string | undefined, usage: "serverAuth" | "clientAuth"): CertPair {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, [`extendedKeyUsage=${usage}`, "basicConstraints=CA:FALSE", ...(san ? [`subjectAltName=${san}`] : [])].join("\n") + "\n");
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr, "-subj", `/CN=${cn}`], dir);
  openssl(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-days", "3", "-out", cert, "-extfile", ext], dir);
  chmodSync(key, 0o600);
  return { cert, key };
}

export function makeTestPki(dir: string): TestPki {
  const ca = makeCa(dir, "ca", "dbkeep test CA");
  const other = makeCa(dir, "other-ca", "dbkeep impostor CA");
  const names = "DNS:localhost,IP:127.0.0.1";
  return {
    dir,
    ca: ca.cert,
    otherCa: other.cert,
    server: issue(dir, "server", ca, "localhost", names, "serverAuth"),
    wrongCa: issue(dir, "server-wrong-ca", other, "localhost", names, "serverAuth"),
    wrongHost: issue(dir, "server-wrong-host", ca, "db.invalid", "DNS:db.invalid", "serverAuth"),
    client: (cn) => issue(dir, `client-${cn}`, ca, cn, undefined, "clientAuth"),
  };
}
