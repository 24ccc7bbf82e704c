package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeQuotesGoldenOutput keeps the sample output in README.md equal
// to what the tests produce.
func TestReadmeQuotesGoldenOutput(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"status.txt", "dlq_list_kinds.txt"} {
		sample, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "```\n"+string(sample)+"```") {
			t.Errorf("README.md does not quote testdata/%s verbatim in a code block; copy it there:\n%s", name, sample)
		}
	}
}
