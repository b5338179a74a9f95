// Runs queries through clickhouse-go v2 over HTTP with the options Grafana's ClickHouse plugin uses
// (pkg/plugin/driver.go: Protocol HTTP, gzip compression, the datasource's user, password and
// default database), and reports each result's column names, types and row count as JSON.
// tests/test_plugin_driver.py builds and runs it against `shoppulse clickhouse serve`.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

type request struct {
	Addr     string  `json:"addr"`
	User     string  `json:"user"`
	Password string  `json:"password"`
	Database string  `json:"database"`
	Queries  []query `json:"queries"`
}

type query struct {
	ID  string `json:"id"`
	SQL string `json:"sql"`
}

type result struct {
	ID      string   `json:"id"`
	Columns []string `json:"columns"`
	Types   []string `json:"types"`
	Rows    int      `json:"rows"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(2)
	}
	db := clickhouse.OpenDB(&clickhouse.Options{
		Addr:        []string{req.Addr},
		Auth:        clickhouse.Auth{Database: req.Database, Username: req.User, Password: req.Password},
		Protocol:    clickhouse.HTTP,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionGZIP},
		DialTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second,
		Settings:    clickhouse.Settings{},
	})
	defer db.Close()
	ctx := context.Background()
	if err := db.PingContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "ping:", err)
		os.Exit(1)
	}
	results := make([]result, 0, len(req.Queries))
	for _, q := range req.Queries {
		out := result{ID: q.ID}
		rows, err := db.QueryContext(ctx, q.SQL)
		if err != nil {
			out.Error = err.Error()
			results = append(results, out)
			continue
		}
		types, err := rows.ColumnTypes()
		if err != nil {
			out.Error = err.Error()
			rows.Close()
			results = append(results, out)
			continue
		}
		values := make([]any, len(types))
		for i, t := range types {
			out.Columns = append(out.Columns, t.Name())
			out.Types = append(out.Types, t.DatabaseTypeName())
			values[i] = reflect.New(t.ScanType()).Interface()
		}
		for rows.Next() {
			if err := rows.Scan(values...); err != nil {
				out.Error = err.Error()
				break
			}
			out.Rows++
		}
		if err := rows.Err(); err != nil && out.Error == "" {
			out.Error = err.Error()
		}
		rows.Close()
		results = append(results, out)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		os.Exit(1)
	}
}
