// Builds the PostgreSQL database the benchmark backs up: application-like tables filled server-side with
// INSERT ... SELECT generate_series, so that a gigabyte takes minutes, not hours.
//
// The data is deliberately not over-compressible: text is drawn word by word from a few thousand words with a
// skewed (Zipf-like) frequency, and there are uuids, md5 hex, microsecond timestamps, numerics, jsonb and some
// random bytea. A generator that repeats a few strings would make every compressor look fast and every pipeline
// look I/O-bound, which is not what a real backup sees.

import { performance } from "node:perf_hooks";
import pg from "pg";

export const BENCH_DB = "dbkeep_bench";
// Bump when the generator changes so that an old database of the same size is rebuilt.
const GENERATOR_VERSION = 1;
const PG = { host: "127.0.0.1", port: 5432, user: "postgres" };

const COMMON_WORDS = `
the of and to a in is it you that he was for on are with as his they be at one have this from or had by hot
word but what some we can out other were all there when up use your how said an each she which do their time if
will way about many then them write would like so these her long make thing see him two has look more day could go
come did number sound no most people my over know water than call first who may down side been now find any new
work part take get place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand port large spell
add even land here must big high such follow act why ask men change went light kind off need house picture try us
again animal point mother world near build self earth father head stand own page should country found answer
school grow study still learn plant cover food sun four between state keep eye never last let thought city tree
cross farm hard start might story saw far sea draw left late run while press close night real life few north
order invoice payment refund shipping customer account password email delivery package warehouse return credit
card discount coupon cart checkout subscription renewal billing address support ticket issue problem resolved
pending cancelled shipped delayed product review rating quantity price total tax currency region store branch
`.trim().split(/\s+/);

const SYLLABLES = ["ka", "lo", "mi", "ter", "san", "vel", "or", "un", "bri", "dex", "qua", "zen", "tor", "mal", "pe",
  "ris", "an", "gol", "fi", "neth", "ur", "sa", "ko", "lin", "ved", "ma", "thi", "ro", "gar", "esk", "ul", "po"];

/** A seeded PRNG, so the vocabulary (and therefore the data's compressibility) is the same on every machine. */
function mulberry32(seed) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Common words first, then made-up ones: with a skewed pick the common words dominate, as in real text. */
export function vocabulary(size = 2000) {
  const rnd = mulberry32(1234);
  const words = new Set(COMMON_WORDS);
  while (words.size < size) {
    const n = 2 + Math.floor(rnd() * 3);
    let w = "";
    for (let i = 0; i < n; i++) w += SYLLABLES[Math.floor(rnd() * SYLLABLES.length)];
    words.add(w);
  }
  return [...words];
}

function sqlArray(words) {
  return `'{${words.join(",")}}'::text[]`;
}

function schemaSql() {
  const vocab = sqlArray(vocabulary());
  return `
    CREATE TABLE customers (
      id bigint PRIMARY KEY, external_id uuid NOT NULL, full_name text NOT NULL, email text NOT NULL,
      country char(2) NOT NULL, tier text NOT NULL, balance numeric(12,2) NOT NULL,
      created_at timestamptz NOT NULL, bio text);
    CREATE TABLE orders (
      id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL, currency char(3) NOT NULL,
      total numeric(12,2) NOT NULL, items int NOT NULL, created_at timestamptz NOT NULL, shipped_at timestamptz,
      shipping_address text NOT NULL);
    CREATE TABLE events (
      id bigint PRIMARY KEY, customer_id bigint NOT NULL, kind text NOT NULL, occurred_at timestamptz NOT NULL,
      payload jsonb NOT NULL);
    CREATE TABLE notes (
      id bigint PRIMARY KEY, customer_id bigint NOT NULL, subject text NOT NULL, body text NOT NULL,
      created_at timestamptz NOT NULL);
    CREATE TABLE attachments (
      id bigint PRIMARY KEY, note_id bigint NOT NULL, file_name text NOT NULL, mime_type text NOT NULL,
      sha256 bytea NOT NULL, content bytea NOT NULL);

    -- Generation helpers; dropped again once the data is in, so the dump holds only the application's schema.
    CREATE FUNCTION bench_word() RETURNS text LANGUAGE sql VOLATILE AS $f$
      SELECT w[1 + floor(array_length(w, 1) * power(random(), 3))::int] FROM (SELECT ${vocab} AS w) v
    $f$;
    CREATE FUNCTION bench_words(n int) RETURNS text LANGUAGE sql VOLATILE AS $f$
      SELECT string_agg(w[1 + floor(array_length(w, 1) * power(random(), 3))::int], ' ')
        FROM (SELECT ${vocab} AS w) v, generate_series(1, n)
    $f$;
    CREATE FUNCTION bench_pick(a text[]) RETURNS text LANGUAGE sql VOLATILE AS $f$
      SELECT a[1 + floor(array_length(a, 1) * power(random(), 1.5))::int]
    $f$;
    CREATE FUNCTION bench_bytes(n int) RETURNS bytea LANGUAGE sql VOLATILE AS $f$
      SELECT decode(string_agg(md5(random()::text), ''), 'hex') FROM generate_series(1, (n + 15) / 16)
    $f$;
    -- Ids grow with time in a real application, so timestamps follow the id, plus jitter.
    CREATE FUNCTION bench_ts(id bigint, per_second numeric) RETURNS timestamptz LANGUAGE sql VOLATILE AS $f$
      SELECT timestamptz '2019-01-01' + (id / per_second + random() * 600) * interval '1 second'
    $f$;
  `;
}

// Rows per batch; one batch adds about 50 MB on disk, so the size check between batches is fine-grained enough.
const CUSTOMERS_PER_BATCH = 10_000;

/** The INSERTs of batch `b` (0-based) by table: ids derive from the batch number, so batches never collide. */
function batchSql(b) {
  const c0 = b * CUSTOMERS_PER_BATCH + 1;
  const c1 = c0 + CUSTOMERS_PER_BATCH - 1;
  const range = (per) => `generate_series(${(c0 - 1) * per + 1}, ${c1 * per})`;
  const customer = `(1 + floor(random() * ${c1}))::bigint`;
  return {
    customers: `INSERT INTO customers
       SELECT g, gen_random_uuid(),
              initcap(bench_word()) || ' ' || initcap(bench_word()),
              lower(bench_word()) || '.' || lower(bench_word()) || (g % 997) || '@' ||
                bench_pick('{example.com,mail.example.org,corp.example.net,post.example.de,example.co.uk}'),
              bench_pick('{US,DE,FR,GB,JP,BR,IN,NL,SE,ES,IT,CA,AU,PL,MX,NG,KR,CH,AT,BE}'),
              bench_pick('{free,basic,pro,business,enterprise}'),
              round((random() * random() * 20000 - 500)::numeric, 2),
              bench_ts(g, 0.05),
              CASE WHEN random() < 0.7 THEN bench_words(5 + (random() * 40)::int) END
         FROM ${range(1)} g`,
    orders: `INSERT INTO orders
       SELECT g, ${customer},
              bench_pick('{delivered,shipped,paid,pending,cancelled,refunded}'),
              bench_pick('{USD,EUR,GBP,JPY,BRL,INR}'),
              round((5 + random() * random() * 900)::numeric, 2), 1 + (random() * random() * 12)::int,
              ts, CASE WHEN random() < 0.8 THEN ts + random() * interval '9 days' END,
              (1 + (random() * 9999)::int) || ' ' || initcap(bench_word()) || ' ' ||
                bench_pick('{Street,Road,Avenue,Lane,Way,Platz,Rue}') || ', ' || lpad((random() * 99999)::int::text, 5, '0') ||
                ' ' || initcap(bench_word())
         FROM (SELECT g, bench_ts(g, 0.15) AS ts FROM ${range(3)} g) s`,
    events: `INSERT INTO events
       SELECT g, ${customer},
              bench_pick('{page_view,click,search,add_to_cart,login,logout,checkout,api_call,error,email_open}'),
              bench_ts(g, 0.3),
              jsonb_strip_nulls(jsonb_build_object(
                'ip', '10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int,
                'user_agent', bench_pick('{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",'
                  '"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Safari/605.1.15","Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",'
                  '"okhttp/4.12.0","curl/8.5.0","Mozilla/5.0 (iPhone; CPU iPhone OS 17_2) Mobile/15E148"}'),
                'path', '/' || bench_word() || '/' || (random() * 100000)::int,
                'duration_ms', (random() * random() * 5000)::int,
                'session', substr(md5(random()::text), 1, 20),
                'tags', to_jsonb(string_to_array(bench_words(1 + (random() * 3)::int), ' ')),
                'referrer', CASE WHEN random() < 0.3 THEN 'https://' || bench_word() || '.example.com/' || bench_word() END,
                'amount', CASE WHEN random() < 0.2 THEN round((random() * 500)::numeric, 2) END))
         FROM ${range(6)} g`,
    notes: `INSERT INTO notes
       SELECT g, ${customer}, initcap(bench_words(3 + (random() * 6)::int)),
              bench_words(20 + (random() * random() * 300)::int), bench_ts(g, 0.1)
         FROM ${range(2)} g`,
    attachments: `INSERT INTO attachments
       SELECT g, (1 + floor(random() * ${c1 * 2}))::bigint,
              lower(bench_word()) || '_' || (random() * 1000)::int || '.' || ext, 'application/' || ext,
              sha256(convert_to(g::text, 'UTF8')), bench_bytes(64 + (random() * random() * 2000)::int)
         FROM (SELECT g, bench_pick('{pdf,png,jpeg,zip,json}') AS ext FROM generate_series(${(c0 - 1) / 5 + 1}, ${c1 / 5}) g) s`,
  };
}

// Two connections, one per core: the text-heavy notes take about as long as all other tables together.
const LANES = [["notes"], ["customers", "orders", "events", "attachments"]];

async function connect(database) {
  const c = new pg.Client({ ...PG, database });
  await c.connect();
  return c;
}

async function withClient(database, fn) {
  const c = await connect(database);
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

function marker(sizeGb) {
  return `dbkeep-bench generator=${GENERATOR_VERSION} size_gb=${sizeGb}`;
}

/** The comment of an existing bench database, or undefined if there is none. */
async function existingMarker() {
  return withClient("postgres", async (c) => {
    const r = await c.query(
      "SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1",
      [BENCH_DB],
    );
    return r.rowCount ? (r.rows[0].comment ?? "") : undefined;
  });
}

export async function databaseSize(database = BENCH_DB) {
  return withClient("postgres", async (c) => Number((await c.query("SELECT pg_database_size($1) AS n", [database])).rows[0].n));
}

export async function dropDatabase(name) {
  await withClient("postgres", (c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

export async function createDatabase(name) {
  await withClient("postgres", (c) => c.query(`CREATE DATABASE "${name}"`));
}

/**
 * Makes sure dbkeep_bench exists at about `sizeGb` GB (reusing it when its comment says so, unless `rebuild`)
 * and returns its size in bytes.
 */
export async function ensureBenchDatabase({ sizeGb, rebuild, log }) {
  const found = await existingMarker();
  if (!rebuild && found === marker(sizeGb)) {
    const size = await databaseSize();
    log(`reusing ${BENCH_DB} (${(size / 1e9).toFixed(2)} GB on disk)`);
    return size;
  }
  if (found !== undefined) log(`rebuilding ${BENCH_DB} (${rebuild ? "--rebuild" : `found "${found || "no marker"}"`})`);
  await dropDatabase(BENCH_DB);
  await createDatabase(BENCH_DB);
  await generate(sizeGb * 1e9, log);
  await withClient("postgres", (c) => c.query(`COMMENT ON DATABASE "${BENCH_DB}" IS '${marker(sizeGb)}'`));
  return databaseSize();
}

async function generate(targetBytes, log) {
  const started = performance.now();
  const lanes = await Promise.all(LANES.map(() => connect(BENCH_DB)));
  try {
    // A crash mid-build only means rebuilding, so there is no point waiting for WAL flushes.
    for (const lane of lanes) await lane.query("SET synchronous_commit = off");
    const c = lanes[0];
    await c.query(schemaSql());
    for (let b = 0; ; b++) {
      const sql = batchSql(b);
      await Promise.all(LANES.map(async (tables, i) => {
        for (const t of tables) await lanes[i].query(sql[t]);
      }));
      const size = Number((await c.query("SELECT pg_database_size(current_database()) AS n")).rows[0].n);
      const secs = (performance.now() - started) / 1000;
      log(`  batch ${b + 1}: ${(size / 1e9).toFixed(2)} of ${(targetBytes / 1e9).toFixed(2)} GB, ${secs.toFixed(0)} s`);
      // The secondary indexes added below take a few percent; stop a little short of the target for them.
      if (size >= targetBytes * 0.95) break;
    }
    await c.query(`
      CREATE INDEX orders_customer_idx ON orders (customer_id);
      CREATE INDEX events_customer_time_idx ON events (customer_id, occurred_at);
      CREATE INDEX notes_customer_idx ON notes (customer_id);
      DROP FUNCTION bench_word(), bench_words(int), bench_pick(text[]), bench_bytes(int), bench_ts(bigint, numeric);`);
    // Freezing sets the hint bits now; otherwise the first pg_dump would pay for writing them and the case that
    // happens to run first would look slower.
    await c.query("VACUUM (FREEZE, ANALYZE)");
    await c.query("CHECKPOINT");
  } finally {
    await Promise.all(lanes.map((lane) => lane.end()));
  }
  log(`  generated in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}
