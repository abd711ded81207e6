package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ChunkSize is the largest chunk of a blob, one etcd request each: etcd
// refuses a request over 1.5 MiB by default (--max-request-bytes), and a
// Go-built module of about 2 MB would not fit in one. Half a MiB leaves a
// wide margin for the key and the request's framing, and keeps one raft
// entry small.
const ChunkSize = 512 << 10

// manifest is written after every chunk of its blob.
type manifest struct {
	Size   int64 `json:"size"`
	Chunks int   `json:"chunks"`
}

// Digest returns "sha256:HEX" of data.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// digestHex checks a "sha256:HEX" digest and returns HEX.
func digestHex(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 {
		return "", fmt.Errorf("digest %q: not sha256:<64 hex digits>: %w", digest, ErrInvalid)
	}
	if _, err := hex.DecodeString(h); err != nil || strings.ToLower(h) != h {
		return "", fmt.Errorf("digest %q: not lowercase hex: %w", digest, ErrInvalid)
	}
	return h, nil
}

// putBlob stores data under its digest, unless a complete blob of that
// digest is there already: the chunks one request each, the manifest
// last. It returns the digest.
func putBlob(ctx context.Context, cli *clientv3.Client, k keys, data []byte) (string, error) {
	digest := Digest(data)
	h, _ := digestHex(digest)
	resp, err := cli.Get(ctx, k.manifest(h), clientv3.WithCountOnly())
	if err != nil {
		return "", fmt.Errorf("blob %s: %w", digest, err)
	}
	if resp.Count > 0 {
		return digest, nil // content-addressed: the same bytes
	}
	n := 0
	for off := 0; off < len(data) || n == 0; off += ChunkSize {
		end := min(off+ChunkSize, len(data))
		if _, err := cli.Put(ctx, k.chunk(h, n), string(data[off:end])); err != nil {
			return "", fmt.Errorf("blob %s chunk %d: %w", digest, n, err)
		}
		n++
	}
	m, _ := json.Marshal(manifest{Size: int64(len(data)), Chunks: n})
	if _, err := cli.Put(ctx, k.manifest(h), string(m)); err != nil {
		return "", fmt.Errorf("blob %s manifest: %w", digest, err)
	}
	return digest, nil
}

// getBlob reads the blob of digest and checks that its bytes hash to it.
func getBlob(ctx context.Context, cli *clientv3.Client, k keys, digest string) ([]byte, error) {
	h, err := digestHex(digest)
	if err != nil {
		return nil, err
	}
	resp, err := cli.Get(ctx, k.manifest(h))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", digest, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("blob %s: %w", digest, ErrBlobMissing)
	}
	var m manifest
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil || m.Chunks <= 0 || m.Size < 0 {
		return nil, fmt.Errorf("blob %s: bad manifest: %w", digest, ErrBlobMissing)
	}
	var buf bytes.Buffer
	buf.Grow(int(m.Size))
	for i := 0; i < m.Chunks; i++ {
		c, err := cli.Get(ctx, k.chunk(h, i))
		if err != nil {
			return nil, fmt.Errorf("blob %s chunk %d: %w", digest, i, err)
		}
		if len(c.Kvs) == 0 {
			return nil, fmt.Errorf("blob %s chunk %d: %w", digest, i, ErrBlobMissing)
		}
		buf.Write(c.Kvs[0].Value)
	}
	data := buf.Bytes()
	if got := Digest(data); got != digest || int64(len(data)) != m.Size {
		return nil, fmt.Errorf("blob %s: its bytes hash to %s: %w", digest, got, ErrDigestMismatch)
	}
	return data, nil
}

// cachedBlob returns the path of the blob of digest in dir, fetching it
// first unless a copy whose bytes hash to digest is there. The file is
// written to a temporary name and renamed once verified: a path returned
// always holds the digest's bytes.
func cachedBlob(ctx context.Context, cli *clientv3.Client, k keys, dir, digest string) (string, error) {
	h, err := digestHex(digest)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "sha256-"+h)
	if b, err := os.ReadFile(path); err == nil && Digest(b) == digest {
		return path, nil
	}
	data, err := getBlob(ctx, cli, k, digest)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("blob cache %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".fetch-*")
	if err != nil {
		return "", fmt.Errorf("blob cache %s: %w", dir, err)
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("blob cache %s: %w", dir, werr)
	}
	return path, nil
}
