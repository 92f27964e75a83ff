// Command peer is the Go crypto/tls peer of the mcp-pqtls interop matrix. It follows the
// peer contract shared by all interop peers (one JSON object per stdout line):
//
//	peer server --port PORT --cert PEM --key PEM [--groups G1,G2,...]
//	peer client --connect HOST:PORT --servername NAME --ca PEM [--groups G1,G2,...]
//
// Both sides speak TLS 1.3 only. Without --groups, Go's defaults apply (Go 1.27:
// X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024, X25519, P-256, P-384, P-521).
// Built by interop/install-go.sh.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// groups maps the IANA names of the contract to Go's CurveIDs. Go 1.27 has no pure
// MLKEM768 (0x0201): crypto/tls implements pure ML-KEM only as MLKEM1024.
var groups = []struct {
	name      string
	id        tls.CurveID
	supported bool
}{
	{"X25519MLKEM768", tls.X25519MLKEM768, true},
	{"SecP256r1MLKEM768", tls.SecP256r1MLKEM768, true},
	{"SecP384r1MLKEM1024", tls.SecP384r1MLKEM1024, true},
	{"MLKEM768", 0x0201, false},
	{"MLKEM1024", tls.MLKEM1024, true},
	{"X25519", tls.X25519, true},
	{"secp256r1", tls.CurveP256, true},
	{"secp384r1", tls.CurveP384, true},
}

func groupName(id tls.CurveID) string {
	for _, g := range groups {
		if g.id == id {
			return g.name
		}
	}
	return fmt.Sprintf("0x%04x", uint16(id))
}

// parseGroups turns a --groups list into CurvePreferences (nil = Go's defaults). On failure it
// returns the offending name and why. crypto/tls silently drops CurveIDs it does not
// implement, hence the explicit table.
func parseGroups(list string) (ids []tls.CurveID, bad, reason string) {
	if list == "" {
		return nil, "", ""
	}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, g := range groups {
			if strings.EqualFold(name, g.name) {
				if !g.supported {
					return nil, g.name, goVersion() + " crypto/tls does not implement " + g.name
				}
				ids, found = append(ids, g.id), true
				break
			}
		}
		if !found {
			return nil, name, "unknown group name"
		}
	}
	return ids, "", ""
}

var (
	outMu sync.Mutex
	out   = json.NewEncoder(os.Stdout) // os.Stdout is unbuffered: each line is flushed.
)

func emit(v any) {
	outMu.Lock()
	defer outMu.Unlock()
	out.Encode(v)
}

func init() { out.SetEscapeHTML(false) }

// goVersion is e.g. "Go 1.27.3", for reasons.
func goVersion() string { return "Go " + strings.TrimPrefix(runtime.Version(), "go") }

func versionName(v uint16) string {
	if v == tls.VersionTLS13 {
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: peer server|client [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	groupList := fs.String("groups", "", "comma-separated IANA group names (default: Go's defaults)")
	switch os.Args[1] {
	case "server":
		port := fs.Int("port", 0, "port on 127.0.0.1 (0 = any; the listening event tells)")
		certFile := fs.String("cert", "", "PEM certificate chain")
		keyFile := fs.String("key", "", "PEM private key")
		fs.Parse(os.Args[2:])
		server(*port, *certFile, *keyFile, *groupList)
	case "client":
		addr := fs.String("connect", "", "HOST:PORT")
		serverName := fs.String("servername", "", "name to send (SNI) and verify")
		caFile := fs.String("ca", "", "PEM CA certificate(s)")
		fs.Parse(os.Args[2:])
		os.Exit(client(*addr, *serverName, *caFile, *groupList))
	default:
		fmt.Fprintln(os.Stderr, "usage: peer server|client [flags]")
		os.Exit(2)
	}
}

// --- server ---

type event struct {
	Event       string `json:"event,omitempty"`
	Port        int    `json:"port,omitempty"`
	Group       string `json:"group,omitempty"`
	Error       string `json:"error,omitempty"`
	Unsupported string `json:"unsupported,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

func server(port int, certFile, keyFile, groupList string) {
	prefs, bad, reason := parseGroups(groupList)
	if bad != "" {
		emit(event{Unsupported: bad, Reason: reason})
		os.Exit(3)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		if reason, unsupported := keyProblem(certFile, keyFile); unsupported {
			emit(event{Unsupported: "certificate", Reason: reason})
			os.Exit(3)
		}
		emit(event{Event: "error", Error: err.Error()})
		os.Exit(1)
	}
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		CurvePreferences: prefs,
		Certificates:     []tls.Certificate{cert},
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cfg)
	if err != nil {
		emit(event{Event: "error", Error: err.Error()})
		os.Exit(1)
	}
	emit(event{Event: "listening", Port: ln.Addr().(*net.TCPAddr).Port})
	for {
		conn, err := ln.Accept()
		if err != nil {
			emit(event{Event: "error", Error: err.Error()})
			continue
		}
		go serve(conn.(*tls.Conn))
	}
}

// serve prints exactly one line per connection: the handshake outcome. Failures after the
// handshake (e.g. a client that sends no request) only go to stderr.
func serve(conn *tls.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		emit(event{Event: "error", Error: err.Error()})
		return
	}
	st := conn.ConnectionState()
	group := groupName(st.CurveID)
	emit(event{Event: "handshake", Group: group})

	var head []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		if len(head) > 16<<10 {
			fmt.Fprintln(os.Stderr, "peer: request head over 16 KiB")
			return
		}
		n, err := conn.Read(buf)
		head = append(head, buf[:n]...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "peer: reading request:", err)
			return
		}
	}
	body, _ := json.Marshal(struct {
		Peer       string `json:"peer"`
		Group      string `json:"group"`
		Version    string `json:"version"`
		HelloRetry bool   `json:"hello_retry"`
	}{"go", group, versionName(st.Version), st.HelloRetryRequest})
	fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"Connection: close\r\n\r\n%s", len(body), body)
}

// keyProblem re-parses a key pair that tls.LoadX509KeyPair rejected (its error is a bare
// "failed to parse private key") and reports whether the cause is an algorithm or key
// encoding this Go cannot handle, e.g. an ML-DSA key that is not seed-only.
func keyProblem(certFile, keyFile string) (string, bool) {
	if certPEM, err := os.ReadFile(certFile); err == nil {
		if b, _ := pem.Decode(certPEM); b != nil {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil &&
				c.PublicKeyAlgorithm == x509.UnknownPublicKeyAlgorithm {
				return "certificate public key algorithm not supported by " + goVersion(), true
			}
		}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return "", false
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil || b.Type != "PRIVATE KEY" {
		return "", false
	}
	if _, err := x509.ParsePKCS8PrivateKey(b.Bytes); err != nil &&
		(strings.Contains(err.Error(), "ML-DSA") || strings.Contains(err.Error(), "unknown algorithm")) {
		return err.Error(), true
	}
	return "", false
}

// --- client ---

type result struct {
	OK          bool    `json:"ok"`
	Group       string  `json:"group,omitempty"`
	Version     string  `json:"version,omitempty"`
	Status      int     `json:"status,omitempty"`
	Body        *string `json:"body,omitempty"`
	Error       string  `json:"error,omitempty"`
	Unsupported string  `json:"unsupported,omitempty"`
	Reason      string  `json:"reason,omitempty"`
}

func client(addr, serverName, caFile, groupList string) int {
	// Go ignores the order of CurvePreferences: it offers the groups in its fixed order
	// (X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024, MLKEM1024, X25519, P-256,
	// P-384, P-521) and sends a key share for the first one only, plus, for a hybrid, the
	// share of its ECDH half if that curve is also enabled. Default: X25519MLKEM768+X25519.
	prefs, bad, reason := parseGroups(groupList)
	if bad != "" {
		emit(result{Unsupported: bad, Reason: reason})
		return 3
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		emit(result{Error: err.Error()})
		return 1
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		// Go skips certificates it cannot parse, e.g. unknown signature algorithms.
		emit(result{Unsupported: "certificate", Reason: "no CA certificate in " + caFile + " could be parsed by " + goVersion()})
		return 3
	}
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		CurvePreferences: prefs,
		RootCAs:          roots,
		ServerName:       serverName,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, x509.ErrUnsupportedAlgorithm) {
			emit(result{Unsupported: "certificate", Reason: err.Error()})
			return 3
		}
		emit(result{Error: err.Error()})
		return 1
	}
	conn := nc.(*tls.Conn)
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	st := conn.ConnectionState()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", serverName)
	raw, err := io.ReadAll(conn)
	if err != nil {
		emit(result{Error: err.Error()})
		return 1
	}
	status, body, err := parseResponse(raw)
	if err != nil {
		emit(result{Error: err.Error()})
		return 1
	}
	s := string(body)
	emit(result{OK: true, Group: groupName(st.CurveID), Version: versionName(st.Version),
		Status: status, Body: &s})
	return 0
}

// parseResponse splits an HTTP/1.x response read to EOF into status and body. (net/http
// would do it, but it adds ~10 s to the peer's cold build.)
func parseResponse(raw []byte) (int, []byte, error) {
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return 0, nil, fmt.Errorf("malformed HTTP response: %q", raw)
	}
	lines := strings.Split(string(head), "\r\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return 0, nil, fmt.Errorf("malformed HTTP status line: %q", lines[0])
	}
	status, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, nil, fmt.Errorf("malformed HTTP status line: %q", lines[0])
	}
	for _, line := range lines[1:] {
		k, v, _ := strings.Cut(line, ":")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if n, err := strconv.Atoi(v); k == "content-length" && err == nil && n <= len(body) {
			body = body[:n]
		}
		if k == "transfer-encoding" && strings.EqualFold(v, "chunked") {
			var out []byte
			for {
				size, rest, ok := bytes.Cut(body, []byte("\r\n"))
				size, _, _ = bytes.Cut(size, []byte(";"))
				n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 32)
				if !ok || err != nil || int(n) > len(rest) {
					return 0, nil, errors.New("malformed chunked HTTP body")
				}
				if n == 0 {
					break
				}
				out, body = append(out, rest[:n]...), bytes.TrimPrefix(rest[n:], []byte("\r\n"))
			}
			body = out
		}
	}
	return status, body, nil
}
