import { describe, expect, it } from "vitest";
import { isLocation, sourceFromUrl, storeFromUrl } from "../../src/config/urls.js";

describe("one-off URLs", () => {
  it("parses PostgreSQL URLs with options as query parameters", () => {
    const s = sourceFromUrl("postgres://app@db.internal:6543/shop?format=custom&compression=zstd&level=7&sslmode=require");
    expect(s.engine).toBe("postgres");
    expect(s.options).toMatchObject({ host: "db.internal", port: 6543, user: "app", database: "shop", format: "custom", compression: "zstd", compression_level: 7, sslmode: "require" });
    expect(s.warnings).toEqual([]);
  });

  it("takes a socket directory as ?host= and warns about a password in the URL", () => {
    const s = sourceFromUrl("postgresql://app:pa%40ss@/shop?host=/var/run/postgresql");
    expect(s.options).toMatchObject({ host: "/var/run/postgresql", password: "pa@ss", database: "shop" });
    expect(s.warnings[0]).toContain("process list");
  });

  it("parses sqlite: paths", () => {
    expect(sourceFromUrl("sqlite:./app.db").options).toMatchObject({ engine: "sqlite", path: "./app.db" });
    expect(sourceFromUrl("sqlite:///var/lib/app.db").options).toMatchObject({ path: "/var/lib/app.db" });
  });

  it("refuses what it cannot read, with a hint and without echoing a password", () => {
    expect(() => sourceFromUrl("oracle://u:topsecret@h/db")).toThrow(/unsupported source "oracle:"/);
    try {
      sourceFromUrl("postgres://u:topsecret@h/");
    } catch (err) {
      expect(String((err as Error).message)).not.toContain("topsecret");
    }
    expect(() => sourceFromUrl("postgres://h/db?colour=blue")).toThrow(/unknown parameter "colour"/);
  });

  it("names a parameter it does not know, with the one that was meant, and explains a wrong value", () => {
    expect(() => sourceFromUrl("postgres://h/db?formt=custom")).toThrow('invalid postgres URL: unknown parameter "formt" (did you mean "format"?)');
    expect(() => sourceFromUrl("postgres://h/db?format=custm")).toThrow('invalid postgres URL: format: expected one of "plain", "custom", "directory", got "custm" (did you mean "custom"?)');
    expect(() => storeFromUrl("s3://bkt?regon=eu-west-1")).toThrow(/invalid s3 store URL s3:\/\/bkt\?regon=eu-west-1: unknown parameter "regon" \(did you mean "region"\?\)/);
  });

  it("refuses a database name the server would cut short, before anything connects", () => {
    const long = `${"x".repeat(60)}_restored`;
    expect(() => sourceFromUrl(`postgres://h/${long}`)).toThrow(`database name "${"x".repeat(20)}..." is 69 bytes long; PostgreSQL keeps only the first 63 and would take it for another database`);
    expect(() => sourceFromUrl(`mysql://h/${"y".repeat(65)}`)).toThrow("is 65 characters long; MySQL and MariaDB allow at most 64");
    expect(sourceFromUrl(`postgres://h/${"x".repeat(63)}`).options.database).toBe("x".repeat(63));
  });

  it("masks the password of a long URL in messages, at once", () => {
    const url = `postgres://app:topsecret@db/?${"a".repeat(300_000)}=${"b".repeat(300_000)}`;
    const t = performance.now();
    let message = "";
    try {
      sourceFromUrl(url);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("postgres://app:***@db/");
    expect(message).not.toContain("topsecret");
    // The regular expression this replaced needed minutes on inputs like these; a generous bound.
    expect(performance.now() - t).toBeLessThan(2000);
  });

  it("maps directories and file: URLs to local stores", () => {
    expect(storeFromUrl("./backups").options).toEqual({ type: "local", path: "./backups" });
    expect(storeFromUrl("file:///var/backups").options).toEqual({ type: "local", path: "/var/backups" });
    expect(() => storeFromUrl("gopher://x")).toThrow(/unsupported store URL scheme "gopher:"/);
  });

  it("maps remote store URLs to their stores' keys, and keeps credentials out of URLs", () => {
    expect(storeFromUrl("s3://bkt/app/prod?endpoint=http://127.0.0.1:9000&region=eu-west-1").options).toMatchObject({ type: "s3", bucket: "bkt", prefix: "app/prod", endpoint: "http://127.0.0.1:9000", region: "eu-west-1" });
    expect(storeFromUrl("sftp://backup@host.example:2222/srv/backups?known_hosts=/etc/kh").options).toMatchObject({ type: "ssh", host: "host.example", port: 2222, user: "backup", path: "/srv/backups", known_hosts: "/etc/kh" });
    expect(storeFromUrl("gs://bkt/pre").options).toMatchObject({ type: "gcs", bucket: "bkt", prefix: "pre" });
    expect(storeFromUrl("rclone:remote:path/x").options).toMatchObject({ type: "rclone", remote: "remote:path/x" });
    const saved = process.env.RESTIC_PASSWORD;
    process.env.RESTIC_PASSWORD = "pw-for-test";
    try {
      expect(storeFromUrl("restic:/srv/repo").options).toMatchObject({ type: "restic", repository: "/srv/repo", password_env: "RESTIC_PASSWORD" });
    } finally {
      if (saved === undefined) delete process.env.RESTIC_PASSWORD;
      else process.env.RESTIC_PASSWORD = saved;
    }
    expect(() => storeFromUrl("sftp://u:secret@h/p")).toThrow(/password in a store URL/);
    expect(() => storeFromUrl("s3://bkt?bogus=1")).toThrow(/invalid s3 store URL .*unknown parameter "bogus"/);
  });

  it("tells URLs and paths from job names", () => {
    expect(isLocation("appdb-backup")).toBe(false);
    expect(isLocation("./backups")).toBe(true);
    expect(isLocation("sqlite:app.db")).toBe(true);
    expect(isLocation("postgres://h/db")).toBe(true);
  });
});
