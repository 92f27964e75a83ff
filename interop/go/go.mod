// The Go peer of the interop matrix; stdlib only. Built by interop/install-go.sh.
module mcp-pqtls/interop/go-peer

// The go line also sets the GODEBUG defaults: below 1.26, tlssecpmlkem=0 would drop the
// SecP*MLKEM* hybrids from Go's default groups.
go 1.27
