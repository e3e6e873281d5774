// node-postgres (pg) check: DDL, parameterised insert, types and values read back, rollback,
// SQLSTATEs, cancel. node-pg sends parameters as untyped text (Buffers as binary) and reads
// results as text: int8 and numeric come back as strings, date and timestamptz as JS Dates.
'use strict';
const pg = require('pg');

const T = 'drv_node';
const config = {
  host: process.env.PGHOST || '127.0.0.1',
  port: Number(process.env.PGPORT || 5432),
  user: process.env.PGUSER || 'tessera',
  database: process.env.PGDATABASE || 'tessera',
};
const COLUMNS = 'id int PRIMARY KEY, c_int int, c_bigint bigint, c_text text, c_bool bool, ' +
  'c_float8 float8, c_numeric numeric(10,2), c_date date, c_timestamptz timestamptz, ' +
  'c_uuid uuid, c_bytea bytea';
const NAMES = ['id', 'c_int', 'c_bigint', 'c_text', 'c_bool', 'c_float8', 'c_numeric', 'c_date',
  'c_timestamptz', 'c_uuid', 'c_bytea'];
const OIDS = [23, 23, 20, 25, 16, 701, 1700, 1082, 1184, 2950, 17];
const ROW = [1, 2147483647, '9007199254740993', 'héllo "wörld" \'q\' \\ ✓', true,
  3.141592653589793, '12345.67', new Date(2024, 1, 29),
  new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789)), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  Buffer.from([0x00, 0xff, 0x10, 0xde])];
// The parameters: timestamptz as text to keep its microseconds (a JS Date has milliseconds).
const PARAMS = [...ROW.slice(0, 8), '2024-02-29 12:34:56.789123+00', ...ROW.slice(9)];
const NULL_ROW = [2, ...Array(10).fill(null)];

const problems = [];
const expect = (ok, msg) => { if (!ok) problems.push(msg); };
async function step(name, fn) {
  try { await fn(); } catch (e) { problems.push(`${name}: ${e.code || ''} ${e.message.split('\n')[0]}`); }
}
const connect = async () => { const c = new pg.Client(config); await c.connect(); return c; };
const show = (v) => (Buffer.isBuffer(v) ? `<Buffer ${v.toString('hex')}>`
  : v instanceof Date ? `Date(${v.toISOString()})` : JSON.stringify(v));
function same(got, want) {
  if (want instanceof Date) return got instanceof Date && got.getTime() === want.getTime();
  if (Buffer.isBuffer(want)) return Buffer.isBuffer(got) && got.equals(want);
  return got === want;
}
const sqlstate = async (client, sql) => {
  try { await client.query(sql); return 'no error'; } catch (e) { return e.code; }
};

async function main() {
  let client;
  await step('connect/DDL', async () => {
    client = await connect();
    await client.query(`DROP TABLE IF EXISTS ${T}`);
    await client.query(`CREATE TABLE ${T} (${COLUMNS})`);
  });
  if (problems.length) return;

  await step('insert', async () => {
    const sql = `INSERT INTO ${T} (${NAMES.join(', ')}) VALUES (${NAMES.map((_, i) => `$${i + 1}`).join(', ')})`;
    await client.query({ name: 'ins', text: sql, values: PARAMS }); // a named prepared statement
    await client.query({ name: 'ins', text: sql, values: NULL_ROW });
  });

  await step('select', async () => {
    const res = await client.query({ text: `SELECT ${NAMES.join(', ')} FROM ${T} ORDER BY id`, rowMode: 'array' });
    const oids = res.fields.map((f) => f.dataTypeID);
    expect(oids.join() === OIDS.join(), `column type OIDs ${oids}, expected ${OIDS}`);
    expect(res.rows.length === 2, `${res.rows.length} rows read back, expected 2`);
    [ROW, NULL_ROW].forEach((want, r) => want.forEach((w, i) => {
      const got = (res.rows[r] || [])[i];
      expect(same(got, w), `${NAMES[i]}: got ${show(got)}, expected ${show(w)}`);
    }));
    const ts = await client.query(`SELECT c_timestamptz::text AS ts FROM ${T} WHERE id = 1`);
    expect(ts.rows[0].ts === '2024-02-29 12:34:56.789123+00',
      `c_timestamptz::text is ${ts.rows[0].ts}, expected 2024-02-29 12:34:56.789123+00`);
  });

  await step('rollback', async () => {
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${T} (id) VALUES ($1)`, [3]);
    await client.query('ROLLBACK');
    const res = await client.query(`SELECT count(*)::int AS n FROM ${T} WHERE id = 3`);
    expect(res.rows[0].n === 0, `rolled-back row is visible (count ${res.rows[0].n})`);
  });

  for (const [sql, want] of [[`INSERT INTO ${T} (id) VALUES (1)`, '23505'],
    ['SELECT * FROM drv_no_such_table', '42P01']]) {
    await step(`error ${want}`, async () => {
      const got = await sqlstate(client, sql);
      expect(got === want, `'${sql}': SQLSTATE ${got}, expected ${want}`);
    });
  }

  // Cancel: pg_sleep() does not exist in Tessera, so the running statement is an UPDATE that
  // waits for a row lock held by another open transaction (PostgreSQL waits indefinitely).
  await step('cancel', async () => {
    const holder = await connect();
    await holder.query('BEGIN');
    await holder.query(`UPDATE ${T} SET c_text = 'held' WHERE id = 1`);
    const start = Date.now();
    const running = sqlstate(client, `UPDATE ${T} SET c_text = 'waiter' WHERE id = 1`);
    setTimeout(() => new pg.Client(config).cancel(client, client.activeQuery), 1000);
    const got = await running;
    const took = (Date.now() - start) / 1000;
    await holder.query('ROLLBACK');
    await holder.end();
    expect(got === '57014', 'cancel not supported: CancelRequest 1s into a lock wait did not ' +
      `cancel it (got ${got} after ${took.toFixed(1)}s, expected 57014 query_canceled)`);
  });
  await client.end();
}

main().catch((e) => problems.push(`unexpected: ${e.message}`)).finally(() => {
  console.log(problems.length ? `FAIL node-postgres: ${problems.join('; ')}` : 'PASS node-postgres');
  process.exit(problems.length ? 1 : 0);
});
