import { describe, expect, it } from "vitest";
import { maskUrlCredentials, MIN_SUBSTRING_SECRET, redact, redactUrlTail, registerSecret, Secret } from "../../src/core/redact.js";

/** The fastest of a few runs, in ms: a busy machine only ever makes a run slower. */
function fastest(fn: () => void, runs = 5): number {
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    fn();
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

describe("redact", () => {
  it("masks a URL's password, also one with an unencoded @, and leaves user, host and path", () => {
    expect(redact("connect to postgres://app:hunter2@db.internal:5432/app failed")).toBe("connect to postgres://app:***@db.internal:5432/app failed");
    expect(redact("mysql://root:p@ss@db/x and redis://:only-pw@cache:6379/0")).toBe("mysql://root:***@db/x and redis://:***@cache:6379/0");
    expect(redact("https://user@example.com:8443/a:b@c")).toBe("https://user@example.com:8443/a:b@c");
    expect(redact("no URL here: a:b@c")).toBe("no URL here: a:b@c");
  });

  it("masks a long secret wherever it occurs, also inside other text and URL-encoded", () => {
    registerSecret("Tr0ub4dor&3-horse");
    expect(redact("token=Tr0ub4dor&3-horse")).toBe("token=***");
    expect(redact("/botTr0ub4dor&3-horse/send")).toBe("/bot***/send");
    expect(redact("echo: Tr0ub4dor%263-horse")).toBe("echo: ***");
  });

  it("masks a short secret only where it stands as a value, so that it does not damage ordinary words", () => {
    registerSecret("wrong");
    expect("wrong".length).toBeLessThan(MIN_SUBSTRING_SECRET);
    expect(redact("something went wrong: the wrongly named table")).toBe("something went wrong: the wrongly named table");
    expect(redact("password=wrong host=db")).toBe("password=*** host=db");
    expect(redact("password: wrong")).toBe("password: ***");
    expect(redact("PGPASSWORD='wrong'")).toBe("PGPASSWORD='***'");
    expect(redact('"wrong"')).toBe('"***"');
    expect(redact("wrong")).toBe("***");
    expect(redact("postgres://app:wrong@db/app")).toBe("postgres://app:***@db/app");
    // A short secret inside a longer one does not break the longer one's mask.
    registerSecret("xwrongx-long-secret");
    expect(redact("key xwrongx-long-secret end")).toBe("key *** end");
  });

  it("a Secret registers itself and never prints its value", () => {
    const s = new Secret("s3cr3t-value-99");
    expect(String(s)).toBe("***");
    expect(JSON.stringify({ s })).toBe('{"s":"***"}');
    expect(redact("the value s3cr3t-value-99")).toBe("the value ***");
  });

  it("shows a notifier URL as scheme and host only", () => {
    expect(redactUrlTail("https://hooks.slack.com/services/T0/B0/XXXX")).toBe("https://hooks.slack.com/***");
    expect(redactUrlTail("https://example.com:8443/hook?token=abc")).toBe("https://example.com:8443/***");
    expect(redactUrlTail("https://user:pw@example.com/")).toBe("https://example.com");
    expect(redactUrlTail("http://example.com")).toBe("http://example.com");
    expect(redactUrlTail("not a url with a secret")).toBe("***");
  });

  it("takes time in proportion to the input's length: a long URL cannot make it backtrack for minutes", () => {
    // The inputs that made the old regular expression quadratic: long runs of scheme letters, and a long URL whose
    // userinfo never ends in @. At 20,000 characters it needed 1.6 s, at 800,000 it would need hours.
    const shapes = [
      (n: number) => "a".repeat(n),
      (n: number) => `postgres://${"u".repeat(n / 2)}:${"p".repeat(n / 2)}`,
      (n: number) => "x://a:b".repeat(n / 7),
      (n: number) => `s3://bucket/${"k/".repeat(n / 2)}`,
      (n: number) => "a://b:c@".repeat(n / 8),
    ];
    registerSecret("a-registered-secret-0");
    for (const shape of shapes) {
      const input = shape(800_000);
      const t = fastest(() => redact(input), 3);
      // Generous, far from the hours the old code needed at this length: a busy machine cannot make it fail.
      expect(t, shape(14)).toBeLessThan(1000);
    }
    expect(maskUrlCredentials(`${"a".repeat(100_000)}://u:p@h`)).toBe(`${"a".repeat(100_000)}://u:***@h`);
  });
});
