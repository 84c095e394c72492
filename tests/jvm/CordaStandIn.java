// A Corda-like JVM stand-in for the test suite (Java 17, one file, no build tool).
//
// It behaves as Corda's public source says a Corda 4 node does where a hot-cold pair
// is concerned (RunOnceService, node start-up and shutdown), and nothing more:
//
// - Mutual exclusion (when mutualExclusionConfiguration.on): one row in table
//   node_mutual_exclusion (mutual_exclusion_id = 'X', machine_name, pid,
//   mutual_exclusion_timestamp, version), created if missing. At start, in one
//   transaction: no row -> insert it; the row is this machine's -> update it; another
//   machine's -> take it by compare-and-swap on version, only when CURRENT_TIMESTAMP >
//   mutual_exclusion_timestamp (as read) + waitInterval. Otherwise log "failed to become
//   the master node ... Try again in ...", sleep waitInterval and exit 1. While running,
//   every updateInterval: re-read the row, exit 1 if it is gone or names another machine
//   or pid, else bump timestamp and version; exit 1 when the database is down.
// - After the guard, a boot delay, then the P2P (and RPC, if set) TCP port opens: every
//   connection gets "<machineName>\n" and is closed (so a test behind a load balancer
//   can tell which node answered). Then: Node for "<name>" started up and registered in
//   N sec.
// - A shutdown hook: on SIGTERM (or SIGINT) it logs, stops refreshing, closes the ports,
//   waits the stop delay and exits 0. Exits for a lost guard or a dead database are 1.
//
// Settings: node.conf (a HOCON subset: objects, dotted keys, = or :, quoted and unquoted
// strings, numbers, booleans, lists, # and // comments; no includes or substitutions),
// read from --config-file FILE, else ./node.conf when it exists; then flags override:
//   --machine-name NAME       mutualExclusionConfiguration.machineName
//   --mutex true|false        mutualExclusionConfiguration.on (Corda's default: false)
//   --update-interval MS      mutualExclusionConfiguration.updateInterval
//   --wait-interval MS        mutualExclusionConfiguration.waitInterval
//   --jdbc-url URL            dataSourceProperties.dataSource.url
//   --db-user USER            dataSourceProperties.dataSource.user
//                             (the password only from node.conf or $STANDIN_DB_PASSWORD)
//   --legal-name NAME         myLegalName (its O= part names the node in the log line)
//   --p2p-port N              p2pAddress ("host:port"; default 10002)
//   --rpc-port N              rpcSettings.address (no RPC port unless set)
//   --boot-delay MS           time from the guard to the ports opening (default 0)
//   --stop-delay MS           pretend shutdown work in the hook (default 0)
//   --db-timeout MS           connect and socket timeout of the database (default 5000)
// Test plumbing, like tests/harness/fake_node.py:
//   --record DIR   write DIR/<pid>.json: pid, pgid, epoch (from CORDA_HA_EPOCH),
//                  machine_name (CORDA_HA_MACHINE_NAME), notify_socket, start (monotonic
//                  seconds, comparable with Python's time.monotonic()), master and
//                  registered (monotonic, when reached), corda_machine_name, p2p_port,
//                  stop (on a SIGTERM exit) and exit (the exit status); rewritten atomically
//   --lock FILE    hold an exclusive lock on FILE for as long as this process lives; when
//                  another node holds it, append "<pid> <monotonic> <holder>" to
//                  FILE.overlaps and carry on (an exact record of two nodes at once). A POSIX
//                  record lock (fcntl), the kind Java's FileChannel takes; fake_node.py
//                  takes the same kind, so the two detect each other.
// The database password is never printed.

import java.io.IOException;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;

public final class CordaStandIn {
    static final String TABLE = "node_mutual_exclusion";

    // ------------------------------------------------------------------ settings
    String machineName;
    boolean mutexOn = false;
    long updateMs = 20000;
    long waitMs = 40000;
    String jdbcUrl;
    String dbUser;
    String dbPassword;
    String legalName;
    String bindHost = "127.0.0.1";
    int p2pPort = 10002;
    int rpcPort = -1;
    long bootDelayMs = 0;
    long stopDelayMs = 0;
    long dbTimeoutMs = 5000;
    String recordDir;
    String lockFile;

    // ------------------------------------------------------------------ state
    final String pid = Long.toString(ProcessHandle.current().pid());
    final Map<String, Object> record = new LinkedHashMap<>();
    final List<ServerSocket> listeners = new ArrayList<>();
    volatile int exitStatus = 0;          // what the shutdown hook exits with
    volatile boolean shuttingDown = false;
    ScheduledExecutorService refresher;
    Connection db;
    FileChannel lockChannel;              // held (with its lock) till the process ends
    FileLock lock;

    static double monotonic() {
        return System.nanoTime() / 1e9;    // CLOCK_MONOTONIC on Linux, like time.monotonic()
    }

    static synchronized void log(String level, String logger, String message) {
        String now = DateTimeFormatter.ISO_INSTANT.format(java.time.Instant.now());
        System.out.println(String.format("[%-5s] %s [%s] %s - %s", level, now,
                Thread.currentThread().getName(), logger, message));
        System.out.flush();
    }

    // ------------------------------------------------------------------ entry point
    public static void main(String[] args) throws Exception {
        CordaStandIn node = new CordaStandIn();
        try {
            node.configure(args);
        } catch (IllegalArgumentException e) {
            System.err.println("CordaStandIn: " + e.getMessage());
            System.exit(2);
        }
        node.run();
    }

    void configure(String[] args) throws IOException {
        String configFile = null;
        Map<String, String> flags = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("expected --flag VALUE, got " + a);
            }
            flags.put(a.substring(2), args[++i]);
        }
        configFile = flags.remove("config-file");
        if (configFile == null && Files.isRegularFile(Path.of("node.conf"))) {
            configFile = "node.conf";
        }
        if (configFile != null) {
            applyNodeConf(Hocon.parse(Files.readString(Path.of(configFile))), configFile);
        }
        for (Map.Entry<String, String> f : flags.entrySet()) {
            String v = f.getValue();
            switch (f.getKey()) {
                case "machine-name" -> machineName = v;
                case "mutex" -> mutexOn = bool(v, "--mutex");
                case "update-interval" -> updateMs = number(v, "--update-interval");
                case "wait-interval" -> waitMs = number(v, "--wait-interval");
                case "jdbc-url" -> jdbcUrl = v;
                case "db-user" -> dbUser = v;
                case "legal-name" -> legalName = v;
                case "p2p-port" -> p2pPort = (int) number(v, "--p2p-port");
                case "rpc-port" -> rpcPort = (int) number(v, "--rpc-port");
                case "boot-delay" -> bootDelayMs = number(v, "--boot-delay");
                case "stop-delay" -> stopDelayMs = number(v, "--stop-delay");
                case "db-timeout" -> dbTimeoutMs = number(v, "--db-timeout");
                case "record" -> recordDir = v;
                case "lock" -> lockFile = v;
                default -> throw new IllegalArgumentException("unknown flag --" + f.getKey());
            }
        }
        String envPassword = System.getenv("STANDIN_DB_PASSWORD");
        if (envPassword != null) {
            dbPassword = envPassword;
        }
        if (machineName == null) {
            machineName = InetAddress.getLocalHost().getHostName();
        }
        if (mutexOn) {
            if (jdbcUrl == null) {
                throw new IllegalArgumentException("mutual exclusion is on but no dataSource.url");
            }
            if (waitMs <= updateMs) {
                // RunOnceService's own check
                throw new IllegalArgumentException("Configuration Error: Node must wait longer "
                        + "than update rate otherwise someone else might be running! Wait interval: "
                        + waitMs + ", Update interval: " + updateMs);
            }
        }
    }

    void applyNodeConf(Map<String, Object> conf, String file) {
        String mx = "enterpriseConfiguration.mutualExclusionConfiguration.";
        if (Hocon.get(conf, "enterpriseConfiguration.mutualExclusionConfiguration") == null
                && Hocon.get(conf, "mutualExclusionConfiguration") != null) {
            mx = "mutualExclusionConfiguration.";
        }
        String s;
        if ((s = Hocon.str(conf, mx + "on")) != null) mutexOn = bool(s, file + ": " + mx + "on");
        if ((s = Hocon.str(conf, mx + "machineName")) != null) machineName = s;
        if ((s = Hocon.str(conf, mx + "updateInterval")) != null) updateMs = number(s, file + ": " + mx + "updateInterval");
        if ((s = Hocon.str(conf, mx + "waitInterval")) != null) waitMs = number(s, file + ": " + mx + "waitInterval");
        String ds = "dataSourceProperties.dataSource.";
        if ((s = Hocon.str(conf, ds + "url")) != null) jdbcUrl = s;
        if ((s = Hocon.str(conf, ds + "user")) != null) dbUser = s;
        if ((s = Hocon.str(conf, ds + "password")) != null) dbPassword = s;
        if ((s = Hocon.str(conf, "myLegalName")) != null) legalName = s;
        if ((s = Hocon.str(conf, "p2pAddress")) != null) {
            bindHost = hostOf(s);
            p2pPort = (int) number(s.substring(s.lastIndexOf(':') + 1), file + ": p2pAddress");
        }
        if ((s = Hocon.str(conf, "rpcSettings.address")) != null) {
            rpcPort = (int) number(s.substring(s.lastIndexOf(':') + 1), file + ": rpcSettings.address");
        }
    }

    static String hostOf(String address) {
        int colon = address.lastIndexOf(':');
        String host = colon < 0 ? address : address.substring(0, colon);
        return host.isEmpty() ? "127.0.0.1" : host;
    }

    static long number(String v, String what) {
        try {
            return Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(what + ": not a whole number: " + v);
        }
    }

    static boolean bool(String v, String what) {
        switch (v.trim().toLowerCase(Locale.ROOT)) {
            case "true": case "yes": case "on": return true;
            case "false": case "no": case "off": return false;
            default: throw new IllegalArgumentException(what + ": not a boolean: " + v);
        }
    }

    String nodeName() {
        if (legalName != null) {
            for (String part : legalName.split(",")) {
                String p = part.trim();
                if (p.startsWith("O=")) return p.substring(2).trim();
            }
            return legalName;
        }
        return machineName;
    }

    // ------------------------------------------------------------------ run
    void run() throws Exception {
        takeNodeLock();
        String epoch = System.getenv("CORDA_HA_EPOCH");
        record.put("pid", Long.parseLong(pid));
        record.put("pgid", ownPgid());
        record.put("epoch", epoch);
        record.put("machine_name", System.getenv("CORDA_HA_MACHINE_NAME"));
        record.put("notify_socket", System.getenv("NOTIFY_SOCKET"));
        record.put("start", monotonic());
        record.put("corda_machine_name", machineName);
        record.put("p2p_port", p2pPort);
        record.put("master", null);
        record.put("registered", null);
        record.put("stop", null);
        record.put("exit", null);
        writeRecord();
        Runtime.getRuntime().addShutdownHook(new Thread(this::onShutdown, "Shutdown"));
        log("INFO", "Node", "Corda stand-in starting: machine " + machineName + " pid " + pid
                + " epoch " + epoch + " mutual exclusion " + (mutexOn ? "on" : "off"));

        if (mutexOn) {
            startRunOnce();
            record.put("master", monotonic());
            writeRecord();
        }
        if (bootDelayMs > 0) {
            Thread.sleep(bootDelayMs);
        }
        openPort(p2pPort, "P2P");
        if (rpcPort >= 0) {
            openPort(rpcPort, "RPC");
        }
        double seconds = ManagementFactory.getRuntimeMXBean().getUptime() / 1000.0;
        record.put("registered", monotonic());
        writeRecord();
        log("INFO", "Node", String.format(Locale.ROOT,
                "Node for \"%s\" started up and registered in %.2f sec", nodeName(), seconds));
        new CountDownLatch(1).await();  // run until a signal or a guard failure ends us
    }

    /** Exit with `status` through the shutdown hook (at most once). */
    void exit(int status) {
        synchronized (this) {
            if (shuttingDown) return;
            exitStatus = status;
        }
        System.exit(status);
    }

    void onShutdown() {
        synchronized (this) {
            shuttingDown = true;
        }
        int status = exitStatus;
        log("INFO", "Node", status == 0 ? "Shutting down (signal)" : "Shutting down (exit " + status + ")");
        if (refresher != null) refresher.shutdownNow();
        for (ServerSocket s : listeners) {
            try {
                s.close();
            } catch (IOException ignored) {
            }
        }
        if (stopDelayMs > 0 && status == 0) {
            try {
                Thread.sleep(stopDelayMs);
            } catch (InterruptedException ignored) {
            }
        }
        if (status == 0) record.put("stop", monotonic());
        record.put("exit", status);
        writeRecord();
        log("INFO", "Node", "Node stopped");
        Runtime.getRuntime().halt(status);
    }

    // ------------------------------------------------------------------ RunOnceService
    Connection connect() throws SQLException {
        Properties props = new Properties();
        if (dbUser != null) props.setProperty("user", dbUser);
        if (dbPassword != null) props.setProperty("password", dbPassword);
        long secs = Math.max(1, (dbTimeoutMs + 999) / 1000);
        props.setProperty("connectTimeout", Long.toString(secs));
        props.setProperty("socketTimeout", Long.toString(secs));
        props.setProperty("loginTimeout", Long.toString(secs));
        props.setProperty("ApplicationName", "CordaStandIn " + machineName);
        Connection c = DriverManager.getConnection(jdbcUrl, props);
        c.setAutoCommit(false);
        c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);  // Corda's default
        return c;
    }

    void createTable() throws SQLException {
        for (int attempt = 0; ; attempt++) {
            try (Statement st = db.createStatement()) {
                st.execute("CREATE TABLE IF NOT EXISTS " + TABLE + " ("
                        + "mutual_exclusion_id CHAR(1) NOT NULL PRIMARY KEY, "
                        + "machine_name VARCHAR(255) NOT NULL, "
                        + "pid VARCHAR(255) NOT NULL, "
                        + "mutual_exclusion_timestamp TIMESTAMP NOT NULL, "
                        + "version BIGINT NOT NULL)");
                db.commit();
                return;
            } catch (SQLException e) {
                db.rollback();
                if (attempt >= 3) throw e;  // a concurrent CREATE (unique violation): retry
            }
        }
    }

    record Row(String machineName, String pid, LocalDateTime timestamp, long version) {}

    Row readRow() throws SQLException {
        try (PreparedStatement st = db.prepareStatement("SELECT machine_name, pid, "
                + "mutual_exclusion_timestamp, version FROM " + TABLE + " WHERE mutual_exclusion_id = 'X'")) {
            st.setQueryTimeout((int) Math.max(1, dbTimeoutMs / 1000));
            try (ResultSet rs = st.executeQuery()) {
                if (!rs.next()) return null;
                return new Row(rs.getString(1), rs.getString(2),
                        rs.getObject(3, LocalDateTime.class), rs.getLong(4));
            }
        }
    }

    /** RunOnceService.updateTimestamp: the one UPDATE, with Corda's WHERE clause. */
    boolean updateTimestamp(Row row) throws SQLException {
        try (PreparedStatement st = db.prepareStatement("UPDATE " + TABLE + " SET machine_name = ?, "
                + "mutual_exclusion_timestamp = CURRENT_TIMESTAMP, pid = ?, version = ? "
                + "WHERE mutual_exclusion_id = 'X' AND (machine_name = ? OR (machine_name <> ? "
                + "AND version = ? AND CAST(CURRENT_TIMESTAMP AS TIMESTAMP) > ?))")) {
            st.setQueryTimeout((int) Math.max(1, dbTimeoutMs / 1000));
            st.setString(1, machineName);
            st.setString(2, pid);
            st.setLong(3, row.version() + 1);
            st.setString(4, machineName);
            st.setString(5, machineName);
            st.setLong(6, row.version());
            st.setObject(7, row.timestamp().plus(Duration.ofMillis(waitMs)));
            return st.executeUpdate() == 1;
        }
    }

    void insertRow() throws SQLException {
        try (PreparedStatement st = db.prepareStatement("INSERT INTO " + TABLE
                + " VALUES ('X', ?, ?, CURRENT_TIMESTAMP, 0)")) {
            st.setString(1, machineName);
            st.setString(2, pid);
            st.executeUpdate();
        }
    }

    void startRunOnce() throws InterruptedException {
        String logger = "RunOnceService";
        boolean master = false;
        Row row = null;
        try {
            db = connect();
            createTable();
            row = readRow();
            if (row == null) {
                log("INFO", logger, "No other node running before");
                insertRow();
                master = true;
            } else {
                if (row.machineName().equals(machineName)) {
                    log("INFO", logger, "Node last run on same machine:" + machineName);
                } else {
                    log("INFO", logger, "Node last run on different machine:" + row.machineName()
                            + " PID: " + row.pid() + ". Now running on " + machineName + " PID: " + pid);
                }
                master = updateTimestamp(row);
            }
            if (master) {
                db.commit();
            } else {
                db.rollback();
            }
        } catch (SQLException e) {
            // 40001/23505: another node changed or inserted the row meanwhile: not the master
            String state = e.getSQLState();
            if (db != null && ("40001".equals(state) || "23505".equals(state))) {
                try {
                    db.rollback();
                } catch (SQLException ignored) {
                }
                master = false;
            } else {
                log("ERROR", logger, "Database error at start: " + e.getMessage());
                exit(1);
                return;
            }
        }
        if (!master) {
            String other = row == null ? "another node" : row.machineName() + ", PID: " + row.pid();
            if (row != null && row.machineName().equals(machineName)) {
                log("ERROR", logger, machineName + " PID: " + pid
                        + " failed mutual exclusion update. Check if another node is running");
            } else {
                log("ERROR", logger, machineName + " PID: " + pid + " failed to become the master node. "
                        + "Check if " + other + " is still running. Try again in " + Duration.ofMillis(waitMs));
            }
            log("INFO", "Node", "Will sleep for " + Duration.ofMillis(waitMs)
                    + " till lease expires then shutting down this process.");
            Thread.sleep(waitMs);
            exit(1);
            return;
        }
        ThreadFactory named = r -> {
            Thread t = new Thread(r, "RunOnceService");
            t.setDaemon(true);
            return t;
        };
        refresher = Executors.newSingleThreadScheduledExecutor(named);
        refresher.scheduleAtFixedRate(this::refresh, updateMs, updateMs, TimeUnit.MILLISECONDS);
    }

    void refresh() {
        String logger = "RunOnceService";
        try {
            Row row = readRow();
            if (row == null) {
                log("ERROR", logger, machineName + " PID: " + pid + " failed mutual exclusion update. "
                        + "Expected to have a row in " + TABLE + " table. Check if another node is running");
                exit(1);
                return;
            }
            if (!row.machineName().equals(machineName) || !row.pid().equals(pid)) {
                log("ERROR", logger, "Expected " + machineName + " PID: " + pid + " but was "
                        + row.machineName() + " PID: " + row.pid() + ". Check if another node is running");
                exit(1);
                return;
            }
            if (!updateTimestamp(row)) {
                db.rollback();
                log("ERROR", logger, machineName + " PID: " + pid
                        + " failed mutual exclusion update. Check if another node is running");
                exit(1);
                return;
            }
            db.commit();
        } catch (SQLException e) {
            if ("40001".equals(e.getSQLState())) {  // the row changed under our transaction
                log("ERROR", logger, machineName + " PID: " + pid + " failed mutual exclusion "
                        + "update (concurrent update). Check if another node is running");
            } else {
                log("ERROR", logger, "Database connection down: " + e.getMessage());
            }
            exit(1);
        } catch (RuntimeException e) {
            log("ERROR", logger, "Mutual exclusion update failed: " + e);
            exit(1);
        }
    }

    // ------------------------------------------------------------------ ports
    void openPort(int port, String what) throws IOException {
        ServerSocket server = new ServerSocket();
        server.setReuseAddress(true);
        server.bind(new InetSocketAddress(bindHost, port), 50);
        listeners.add(server);
        if (what.equals("P2P")) {
            p2pPort = server.getLocalPort();
            record.put("p2p_port", p2pPort);
        } else {
            record.put("rpc_port", server.getLocalPort());
        }
        log("INFO", "Node", what + " listening on " + bindHost + ":" + server.getLocalPort());
        byte[] answer = (machineName + "\n").getBytes(StandardCharsets.UTF_8);
        Thread t = new Thread(() -> {
            while (!server.isClosed()) {
                try (Socket s = server.accept()) {
                    s.setSoTimeout(1000);
                    OutputStream out = s.getOutputStream();
                    out.write(answer);
                    out.flush();
                    s.shutdownOutput();
                } catch (IOException ignored) {
                    // closed at shutdown, or the client went away
                }
            }
        }, what + " listener");
        t.setDaemon(true);
        t.start();
    }

    // ------------------------------------------------------------------ test plumbing
    void takeNodeLock() throws IOException {
        if (lockFile == null) return;
        Path path = Path.of(lockFile);
        lockChannel = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE,
                StandardOpenOption.CREATE);
        lock = lockChannel.tryLock();
        if (lock != null) {
            lockChannel.truncate(0);
            lockChannel.write(ByteBuffer.wrap((pid + "\n").getBytes(StandardCharsets.UTF_8)), 0);
        } else {
            ByteBuffer buf = ByteBuffer.allocate(64);
            lockChannel.read(buf, 0);
            String holder = new String(buf.array(), 0, buf.position(), StandardCharsets.UTF_8).trim();
            String line = String.format(Locale.ROOT, "%s %.6f %s%n", pid, monotonic(), holder);
            Files.writeString(Path.of(lockFile + ".overlaps"), line, StandardOpenOption.CREATE,
                    StandardOpenOption.APPEND);
        }
    }

    static long ownPgid() {
        try {
            String stat = Files.readString(Path.of("/proc/self/stat"));
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return Long.parseLong(f[2]);  // state ppid pgrp ...
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    synchronized void writeRecord() {
        if (recordDir == null) return;
        Path path = Path.of(recordDir, pid + ".json");
        Path tmp = Path.of(recordDir, pid + ".json.tmp");
        try {
            Files.writeString(tmp, Json.write(record));
            Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            log("WARN", "Node", "cannot write the record " + path + ": " + e.getMessage());
        }
    }

    // ------------------------------------------------------------------ JSON (records only)
    static final class Json {
        static String write(Map<String, Object> map) {
            StringBuilder b = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<String, Object> e : map.entrySet()) {
                if (!first) b.append(", ");
                first = false;
                b.append(quote(e.getKey())).append(": ");
                Object v = e.getValue();
                if (v == null) {
                    b.append("null");
                } else if (v instanceof Double d) {
                    b.append(String.format(Locale.ROOT, "%.6f", d));
                } else if (v instanceof Number || v instanceof Boolean) {
                    b.append(v);
                } else {
                    b.append(quote(v.toString()));
                }
            }
            return b.append("}").toString();
        }

        static String quote(String s) {
            StringBuilder b = new StringBuilder("\"");
            for (char c : s.toCharArray()) {
                switch (c) {
                    case '"' -> b.append("\\\"");
                    case '\\' -> b.append("\\\\");
                    case '\n' -> b.append("\\n");
                    case '\r' -> b.append("\\r");
                    case '\t' -> b.append("\\t");
                    default -> {
                        if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                        else b.append(c);
                    }
                }
            }
            return b.append('"').toString();
        }
    }

    // ------------------------------------------------------------------ HOCON subset
    /** Objects (braces, optional = or : before them), dotted keys, quoted and unquoted
     *  strings, numbers and booleans (kept as strings), lists, # and // comments, commas or
     *  newlines between fields. No includes, no substitutions (an error). */
    static final class Hocon {
        private final String s;
        private int i;

        private Hocon(String s) {
            this.s = s;
        }

        static Map<String, Object> parse(String text) {
            Hocon h = new Hocon(text);
            h.skip(true);
            Map<String, Object> root;
            if (h.peek() == '{') {
                h.i++;
                root = h.object('}');
            } else {
                root = h.object('\0');
            }
            return root;
        }

        static Object get(Map<String, Object> map, String path) {
            if (map.containsKey(path)) return map.get(path);
            int dot = path.indexOf('.');
            while (dot > 0) {
                Object child = map.get(path.substring(0, dot));
                if (child instanceof Map<?, ?> m) {
                    @SuppressWarnings("unchecked")
                    Object found = get((Map<String, Object>) m, path.substring(dot + 1));
                    if (found != null) return found;
                }
                dot = path.indexOf('.', dot + 1);
            }
            return null;
        }

        static String str(Map<String, Object> map, String path) {
            Object v = get(map, path);
            return v instanceof String ? (String) v : null;
        }

        private char peek() {
            return i < s.length() ? s.charAt(i) : '\0';
        }

        private IllegalArgumentException error(String what) {
            int line = 1;
            for (int k = 0; k < i && k < s.length(); k++) if (s.charAt(k) == '\n') line++;
            return new IllegalArgumentException("node.conf line " + line + ": " + what);
        }

        /** Skip blanks and comments; with `separators`, newlines and commas too. */
        private void skip(boolean separators) {
            while (i < s.length()) {
                char c = s.charAt(i);
                if (c == ' ' || c == '\t' || c == '\r' || (separators && (c == '\n' || c == ','))) {
                    i++;
                } else if (c == '#' || (c == '/' && i + 1 < s.length() && s.charAt(i + 1) == '/')) {
                    while (i < s.length() && s.charAt(i) != '\n') i++;
                } else {
                    return;
                }
            }
        }

        private Map<String, Object> object(char close) {
            Map<String, Object> map = new LinkedHashMap<>();
            while (true) {
                skip(true);
                char c = peek();
                if (c == close) {
                    if (close != '\0') i++;
                    return map;
                }
                if (c == '\0') throw error("unexpected end of file");
                List<String> path = key();
                skip(false);
                c = peek();
                Object value;
                if (c == '{') {
                    i++;
                    value = object('}');
                } else if (c == '=' || c == ':') {
                    i++;
                    skip(false);
                    value = value();
                } else if (c == '+') {
                    throw error("+= is not supported");
                } else {
                    throw error("expected =, : or { after key " + String.join(".", path));
                }
                put(map, path, value);
            }
        }

        @SuppressWarnings("unchecked")
        private static void put(Map<String, Object> map, List<String> path, Object value) {
            Map<String, Object> m = map;
            for (int k = 0; k < path.size() - 1; k++) {
                Object next = m.get(path.get(k));
                if (!(next instanceof Map)) {
                    next = new LinkedHashMap<String, Object>();
                    m.put(path.get(k), next);
                }
                m = (Map<String, Object>) next;
            }
            String last = path.get(path.size() - 1);
            Object old = m.get(last);
            if (old instanceof Map && value instanceof Map) {
                for (Map.Entry<String, Object> e : ((Map<String, Object>) value).entrySet()) {
                    put((Map<String, Object>) old, List.of(e.getKey()), e.getValue());
                }
            } else {
                m.put(last, value);
            }
        }

        private List<String> key() {
            List<String> path = new ArrayList<>();
            StringBuilder part = new StringBuilder();
            while (true) {
                char c = peek();
                if (c == '"') {
                    part.append(quoted());
                } else if (c == '.') {
                    i++;
                    path.add(part.toString());
                    part.setLength(0);
                } else if (c == '\0' || " \t\r\n=:{}[],#+".indexOf(c) >= 0) {
                    break;
                } else {
                    part.append(c);
                    i++;
                }
            }
            path.add(part.toString());
            if (path.stream().anyMatch(String::isEmpty)) throw error("bad key");
            return path;
        }

        private String quoted() {
            i++;  // opening quote
            StringBuilder b = new StringBuilder();
            while (true) {
                if (i >= s.length()) throw error("unterminated string");
                char c = s.charAt(i++);
                if (c == '"') return b.toString();
                if (c == '\\') {
                    char e = s.charAt(i++);
                    switch (e) {
                        case 'n' -> b.append('\n');
                        case 't' -> b.append('\t');
                        case 'r' -> b.append('\r');
                        case 'u' -> {
                            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                            i += 4;
                        }
                        default -> b.append(e);
                    }
                } else {
                    b.append(c);
                }
            }
        }

        private Object value() {
            char c = peek();
            if (c == '{') {
                i++;
                return object('}');
            }
            if (c == '[') {
                i++;
                List<Object> list = new ArrayList<>();
                while (true) {
                    skip(true);
                    if (peek() == ']') {
                        i++;
                        return list;
                    }
                    if (peek() == '\0') throw error("unterminated list");
                    list.add(value());
                }
            }
            StringBuilder b = new StringBuilder();
            boolean quotedSeen = false;
            while (true) {
                c = peek();
                if (c == '"') {
                    b.append(quoted());
                    quotedSeen = true;
                } else if (c == '\0' || c == '\n' || c == ',' || c == '}' || c == ']' || c == '#'
                        || (c == '/' && i + 1 < s.length() && s.charAt(i + 1) == '/')) {
                    break;
                } else if (c == '$' && i + 1 < s.length() && s.charAt(i + 1) == '{') {
                    throw error("substitutions (${...}) are not supported by the stand-in");
                } else {
                    b.append(c);
                    i++;
                }
            }
            String v = b.toString().strip();
            if (v.isEmpty() && !quotedSeen) throw error("missing value");
            return v;
        }
    }
}
