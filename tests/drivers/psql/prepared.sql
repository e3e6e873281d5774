-- psql check, run by check_psql.sh after check.sql with ON_ERROR_STOP=1: a server-side
-- prepared INSERT with typed parameters (PREPARE/EXECUTE); output must equal prepared.expected.
\pset format unaligned
\pset tuples_only on
PREPARE drv_ins(int, int, bigint, text, bool, float8, numeric, date, timestamptz, uuid, bytea) AS
  INSERT INTO drv_psql VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
EXECUTE drv_ins(4, 2147483647, 9007199254740993, 'héllo "wörld" ''q'' \ ✓', true,
  3.141592653589793, 12345.67, '2024-02-29', '2024-02-29 12:34:56.789123+00',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff10de');
DEALLOCATE drv_ins;
SELECT * FROM drv_psql WHERE id = 4;
