// Command httpserver is a tiny static HTTP server (and client) for the
// cluster tests, so that test images need nothing but a Debian minbase.
//
//	httpserver [ADDR]   serve GET / with "hello from HOSTNAME\n" (ADDR ":8080")
//	httpserver get [-ca FILE] [-token FILE] URL
//	                    print the body of URL; exit 1 unless the status is 200
//	                    (-ca: trusted CA bundle, -token: bearer token file)
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "get" {
		fs := flag.NewFlagSet("get", flag.ExitOnError)
		ca := fs.String("ca", "", "CA bundle to trust")
		token := fs.String("token", "", "file with a bearer token")
		fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			fmt.Fprintln(os.Stderr, "usage: httpserver get [-ca FILE] [-token FILE] URL")
			os.Exit(2)
		}
		os.Exit(get(fs.Arg(0), *ca, *token))
	}
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	log.Printf("listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}

func get(url, ca, token string) int {
	c := &http.Client{Timeout: 10 * time.Second}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, "get:", err)
			return 1
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		return 1
	}
	if token != "" {
		t, err := os.ReadFile(token)
		if err != nil {
			fmt.Fprintln(os.Stderr, "get:", err)
			return 1
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(t)))
	}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		return 1
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "get: status", resp.Status)
		return 1
	}
	return 0
}
