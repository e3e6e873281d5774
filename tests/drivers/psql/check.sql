-- psql check, run by check_psql.sh with ON_ERROR_STOP=1: its output must equal check.expected.
-- Literal values of every type and a NULL row, read back as text; a rolled-back insert; and
-- the result column types as psql's \gdesc reports them (last: it needs pg_catalog).
\pset format unaligned
\pset tuples_only on
\pset null <NULL>
DROP TABLE IF EXISTS drv_psql;
CREATE TABLE drv_psql (id int PRIMARY KEY, c_int int, c_bigint bigint, c_text text,
  c_bool bool, c_float8 float8, c_numeric numeric(10,2), c_date date,
  c_timestamptz timestamptz, c_uuid uuid, c_bytea bytea);
INSERT INTO drv_psql VALUES
  (1, 2147483647, 9007199254740993, 'héllo "wörld" ''q'' \ ✓', true, 3.141592653589793,
   12345.67, '2024-02-29', '2024-02-29 12:34:56.789123+00',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff10de'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT * FROM drv_psql ORDER BY id;
BEGIN;
INSERT INTO drv_psql (id) VALUES (3);
ROLLBACK;
SELECT count(*) AS rolled_back_rows FROM drv_psql WHERE id = 3;
SELECT * FROM drv_psql ORDER BY id \gdesc
