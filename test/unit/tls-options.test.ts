import { describe, expect, it } from "vitest";
import { quoteOption } from "../../src/engines/mysql/index.js";
import { effectiveSslMode, mysql2Attempts, optionFileTls } from "../../src/engines/mysql/tls.js";
import { pgTlsFromEnv } from "../../src/engines/postgres/tls.js";

describe("MySQL/MariaDB TLS settings", () => {
  const files = { ssl_ca: "/etc/db/ca.pem", ssl_cert: "/etc/db/c.pem", ssl_key: "/etc/db/k.pem" };

  it("MySQL's clients get ssl-mode; a given CA is never left unchecked", () => {
    expect(optionFileTls({ ssl_mode: "disabled", ...files }, "mysql", quoteOption)).toEqual(["ssl-mode=DISABLED"]);
    expect(optionFileTls({}, "mysql", quoteOption)).toEqual(["ssl-mode=PREFERRED"]);
    expect(optionFileTls({ ssl_mode: "required" }, "mysql", quoteOption)).toEqual(["ssl-mode=REQUIRED"]);
    // MySQL's REQUIRED ignores ssl-ca (with a warning): dbkeep asks for VERIFY_CA instead.
    expect(optionFileTls({ ssl_mode: "required", ssl_ca: files.ssl_ca }, "mysql", quoteOption)).toEqual(['ssl-ca="/etc/db/ca.pem"', "ssl-mode=VERIFY_CA"]);
    expect(optionFileTls({ ssl_mode: "verify_identity", ...files }, "mysql", quoteOption)).toEqual([
      'ssl-ca="/etc/db/ca.pem"', 'ssl-cert="/etc/db/c.pem"', 'ssl-key="/etc/db/k.pem"', "ssl-mode=VERIFY_IDENTITY",
    ]);
  });

  it("MariaDB's clients: ssl-ca checks the chain, ssl-verify-server-cert the chain and the host name", () => {
    expect(optionFileTls({ ssl_mode: "disabled" }, "mariadb", quoteOption)).toEqual(["skip-ssl"]);
    expect(optionFileTls({}, "mariadb", quoteOption)).toEqual([]);
    expect(optionFileTls({ ssl_mode: "required" }, "mariadb", quoteOption)).toEqual(["ssl"]);
    expect(optionFileTls({ ssl_mode: "verify_ca", ssl_ca: files.ssl_ca }, "mariadb", quoteOption)).toEqual(['ssl-ca="/etc/db/ca.pem"', "ssl"]);
    // No CA-only check without a CA file: the stricter one, never none.
    expect(optionFileTls({ ssl_mode: "verify_ca" }, "mariadb", quoteOption)).toEqual(["ssl", "ssl-verify-server-cert"]);
    expect(optionFileTls({ ssl_mode: "verify_identity", ssl_ca: files.ssl_ca }, "mariadb", quoteOption)).toEqual(['ssl-ca="/etc/db/ca.pem"', "ssl", "ssl-verify-server-cert"]);
  });

  it("ssl_ca without ssl_mode means verify_ca; preferred tries TLS, then plain text", () => {
    expect(effectiveSslMode({ ssl_ca: "/x" })).toBe("verify_ca");
    expect(effectiveSslMode({})).toBe("preferred");
    const preferred = mysql2Attempts({});
    expect(preferred).toHaveLength(2);
    expect(preferred[0]).toMatchObject({ rejectUnauthorized: false, verifyIdentity: false });
    expect(preferred[1]).toBeUndefined();
    expect(mysql2Attempts({ ssl_mode: "verify_identity" })).toEqual([{ rejectUnauthorized: true, verifyIdentity: true }]);
    expect(mysql2Attempts({ ssl_mode: "disabled" })).toEqual([undefined]);
  });
});

describe("libpq's environment", () => {
  it("PGSSLMODE, PGSSLROOTCERT, PGSSLCERT and PGSSLKEY; an unknown sslmode is a configuration error", () => {
    expect(pgTlsFromEnv({ PGSSLMODE: "verify-ca", PGSSLROOTCERT: "/r", PGSSLCERT: "/c", PGSSLKEY: "/k" })).toEqual({ sslmode: "verify-ca", sslrootcert: "/r", sslcert: "/c", sslkey: "/k" });
    expect(pgTlsFromEnv({})).toEqual({});
    expect(() => pgTlsFromEnv({ PGSSLMODE: "verify_full" })).toThrow(/not an sslmode/);
  });
});
