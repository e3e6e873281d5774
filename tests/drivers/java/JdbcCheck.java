// pgJDBC check: DDL, PreparedStatement with typed parameters, types and values read back,
// rollback, SQLSTATEs, Statement.cancel(). Run: java -cp postgresql.jar JdbcCheck.java
import java.math.BigDecimal;
import java.sql.*;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.util.*;

public class JdbcCheck {
    static final String T = "drv_jdbc";
    static final String COLUMNS = "id int PRIMARY KEY, c_int int, c_bigint bigint, c_text text, "
        + "c_bool bool, c_float8 float8, c_numeric numeric(10,2), c_date date, "
        + "c_timestamptz timestamptz, c_uuid uuid, c_bytea bytea";
    static final String[] NAMES = {"id", "c_int", "c_bigint", "c_text", "c_bool", "c_float8",
        "c_numeric", "c_date", "c_timestamptz", "c_uuid", "c_bytea"};
    static final String[] TYPES = {"int4", "int4", "int8", "text", "bool", "float8", "numeric",
        "date", "timestamptz", "uuid", "bytea"};
    static final Object[] ROW = {1, 2147483647, 9007199254740993L, "héllo \"wörld\" 'q' \\ ✓", true,
        3.141592653589793, new BigDecimal("12345.67"), LocalDate.of(2024, 2, 29),
        OffsetDateTime.parse("2024-02-29T12:34:56.789123Z"),
        UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        new byte[] {0x00, (byte) 0xff, 0x10, (byte) 0xde}};

    static final List<String> problems = new ArrayList<>();
    interface Step { void run() throws Exception; }

    static void step(String name, Step s) {
        try {
            s.run();
        } catch (SQLException e) {
            problems.add(name + ": " + e.getSQLState() + " " + e.getMessage().split("\n")[0]);
        } catch (Exception e) {
            problems.add(name + ": " + e);
        }
    }

    static void expect(boolean ok, String msg) { if (!ok) problems.add(msg); }

    static Connection connect() throws SQLException {
        String url = String.format("jdbc:postgresql://%s:%s/%s",
            env("PGHOST", "127.0.0.1"), env("PGPORT", "5432"), env("PGDATABASE", "tessera"));
        return DriverManager.getConnection(url, env("PGUSER", "tessera"), env("PGPASSWORD", ""));
    }

    static String env(String k, String d) { return System.getenv().getOrDefault(k, d); }

    static String state(Connection c, String sql) {
        try (Statement s = c.createStatement()) {
            s.execute(sql);
            return "no error";
        } catch (SQLException e) {
            return e.getSQLState();
        }
    }

    static String show(Object v) {
        return v instanceof byte[] b ? "bytes" + Arrays.toString(b)
            : v == null ? "null" : v + " (" + v.getClass().getSimpleName() + ")";
    }

    public static void main(String[] args) throws Exception {
        Connection[] conn = new Connection[1];
        step("connect/DDL", () -> {
            conn[0] = connect();
            try (Statement s = conn[0].createStatement()) {
                s.execute("DROP TABLE IF EXISTS " + T);
                s.execute("CREATE TABLE " + T + " (" + COLUMNS + ")");
                s.execute("CREATE INDEX " + T + "_idx ON " + T + " (c_bigint DESC, c_text)");
            }
        });
        if (problems.isEmpty()) {
            run(conn[0]);
        }
        System.out.println(problems.isEmpty() ? "PASS pgjdbc" : "FAIL pgjdbc: " + String.join("; ", problems));
        System.exit(problems.isEmpty() ? 0 : 1);
    }

    static void run(Connection c) {
        // DatabaseMetaData reads pg_catalog: tables, columns, the primary key (through
        // information_schema._pg_expandarray over pg_index.indkey) and indexes.
        step("DatabaseMetaData", () -> {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", T, new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            expect(tables.equals(List.of(T)), "getTables " + tables);
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", T, null)) {
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getInt("DATA_TYPE"));
            }
            expect(cols.size() == NAMES.length && cols.get(0).equals("id:" + Types.INTEGER)
                && cols.get(2).equals("c_bigint:" + Types.BIGINT), "getColumns " + cols);
            List<String> pk = new ArrayList<>();
            try (ResultSet rs = md.getPrimaryKeys(null, "public", T)) {
                while (rs.next()) pk.add(rs.getString("COLUMN_NAME") + "#" + rs.getInt("KEY_SEQ") + "@" + rs.getString("PK_NAME"));
            }
            expect(pk.equals(List.of("id#1@" + T + "_pkey")), "getPrimaryKeys " + pk);
            List<String> idx = new ArrayList<>();
            try (ResultSet rs = md.getIndexInfo(null, "public", T, false, false)) {
                while (rs.next()) idx.add(rs.getString("INDEX_NAME") + "." + rs.getInt("ORDINAL_POSITION") + "="
                    + rs.getString("COLUMN_NAME") + "/" + rs.getString("ASC_OR_DESC") + (rs.getBoolean("NON_UNIQUE") ? "" : "!"));
            }
            // Unique indexes first (JDBC orders by NON_UNIQUE, TYPE, INDEX_NAME, ORDINAL_POSITION).
            expect(idx.equals(List.of(T + "_pkey.1=id/A!", T + "_idx.1=c_bigint/D", T + "_idx.2=c_text/A")),
                "getIndexInfo " + idx);
        });
        step("prepared insert", () -> {
            String sql = "INSERT INTO " + T + " (" + String.join(", ", NAMES) + ") VALUES (?"
                + ", ?".repeat(NAMES.length - 1) + ")";
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                ps.setInt(1, 1);
                ps.setInt(2, (Integer) ROW[1]);
                ps.setLong(3, (Long) ROW[2]);
                ps.setString(4, (String) ROW[3]);
                ps.setBoolean(5, (Boolean) ROW[4]);
                ps.setDouble(6, (Double) ROW[5]);
                ps.setBigDecimal(7, (BigDecimal) ROW[6]);
                ps.setObject(8, ROW[7]);
                ps.setObject(9, ROW[8]);
                ps.setObject(10, ROW[9]);
                ps.setBytes(11, (byte[]) ROW[10]);
                ps.executeUpdate();
                int[] sqlTypes = {Types.INTEGER, Types.INTEGER, Types.BIGINT, Types.VARCHAR,
                    Types.BOOLEAN, Types.DOUBLE, Types.NUMERIC, Types.DATE,
                    Types.TIMESTAMP_WITH_TIMEZONE, Types.OTHER, Types.BINARY};
                ps.setInt(1, 2);
                for (int i = 2; i <= NAMES.length; i++) {
                    ps.setNull(i, sqlTypes[i - 1]);
                }
                ps.executeUpdate();
            }
        });

        step("select", () -> {
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT " + String.join(", ", NAMES) + " FROM " + T + " ORDER BY id")) {
                ResultSetMetaData md = rs.getMetaData();
                for (int i = 1; i <= NAMES.length; i++) {
                    expect(md.getColumnTypeName(i).equals(TYPES[i - 1]),
                        NAMES[i - 1] + ": type " + md.getColumnTypeName(i) + ", expected " + TYPES[i - 1]);
                }
                expect(rs.next(), "row 1 missing");
                for (int i = 1; i <= NAMES.length; i++) {
                    Object want = ROW[i - 1];
                    Object got = want instanceof LocalDate ? rs.getObject(i, LocalDate.class)
                        : want instanceof OffsetDateTime ? rs.getObject(i, OffsetDateTime.class)
                        : rs.getObject(i);
                    boolean same = want instanceof byte[] w ? got instanceof byte[] g && Arrays.equals(g, w)
                        : want instanceof OffsetDateTime w ? got instanceof OffsetDateTime g && g.isEqual(w)
                        : want.equals(got);
                    expect(same, NAMES[i - 1] + ": got " + show(got) + ", expected " + show(want));
                }
                expect(rs.next() && rs.getInt(1) == 2, "row 2 missing");
                for (int i = 2; i <= NAMES.length; i++) {
                    Object got = rs.getObject(i);
                    expect(got == null && rs.wasNull(), NAMES[i - 1] + ": got " + show(got) + ", expected NULL");
                }
            }
        });

        step("rollback", () -> {
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO " + T + " (id) VALUES (3)");
            }
            c.rollback();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT count(*) FROM " + T + " WHERE id = 3")) {
                rs.next();
                expect(rs.getLong(1) == 0, "rolled-back row is visible");
            }
        });

        String[][] errors = {{"INSERT INTO " + T + " (id) VALUES (1)", "23505"},
            {"SELECT * FROM drv_no_such_table", "42P01"}};
        for (String[] e : errors) {
            step("error " + e[1], () -> {
                String got = state(c, e[0]);
                expect(got.equals(e[1]), "'" + e[0] + "': SQLSTATE " + got + ", expected " + e[1]);
            });
        }

        // Cancel: pg_sleep() does not exist in Tessera, so the running statement is an UPDATE
        // that waits for a row lock held by another open transaction (PostgreSQL waits
        // indefinitely).
        step("cancel", () -> {
            try (Connection holder = connect(); Statement waiter = c.createStatement()) {
                holder.setAutoCommit(false);
                try (Statement s = holder.createStatement()) {
                    s.executeUpdate("UPDATE " + T + " SET c_text = 'held' WHERE id = 1");
                }
                Thread canceller = new Thread(() -> {
                    try {
                        Thread.sleep(1000);
                        waiter.cancel();
                    } catch (Exception ignored) {
                        // reported through the waiter's outcome
                    }
                });
                canceller.start();
                long start = System.nanoTime();
                String got;
                try {
                    waiter.executeUpdate("UPDATE " + T + " SET c_text = 'waiter' WHERE id = 1");
                    got = "no error";
                } catch (SQLException e) {
                    got = e.getSQLState();
                }
                double took = (System.nanoTime() - start) / 1e9;
                holder.rollback();
                expect(got.equals("57014"), String.format("cancel not supported: CancelRequest 1s into a "
                    + "lock wait did not cancel it (got %s after %.1fs, expected 57014 query_canceled)", got, took));
            }
        });
    }
}
