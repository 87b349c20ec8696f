package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/test/shared"
)

func TestAnalyzeExitStatusAndSchema(t *testing.T) {
	out, code := runCtl(t, "analyze", repoLab("c.pcap"))
	if code != 0 || !strings.Contains(out, "OK") || !strings.Contains(out, "SKF 5/5") {
		t.Errorf("c.pcap: exit %d, output:\n%s", code, out)
	}
	if _, code := runCtl(t, "analyze", "/nonexistent.pcap"); code != 2 {
		t.Errorf("missing file: exit %d, want 2", code)
	}
	t.Run("corpus windows-809", func(t *testing.T) {
		out, code := runCtl(t, "analyze", "--json", shared.Corpus(t, "zeek-spicy-ipsec-ipsec_client.pcap"))
		if code != 1 {
			t.Errorf("exit %d, want 1 for error verdicts", code)
		}
		// The JSON ends before the error line that cobra's caller prints.
		var rep struct {
			Schema   string `json:"schema"`
			Version  int    `json:"version"`
			Sessions []struct {
				Client                 string          `json:"client"`
				Server                 string          `json:"server"`
				SPIi                   string          `json:"spi_i"`
				SPIr                   string          `json:"spi_r"`
				Established            *bool           `json:"established"`
				FragmentationSupported map[string]bool `json:"fragmentation_supported"`
				ProposalChosen         string          `json:"proposal_chosen"`
				PMTUEstimate           *struct {
					MTU int `json:"mtu"`
				} `json:"pmtu_estimate"`
				Verdicts []struct {
					Code      string   `json:"code"`
					Severity  string   `json:"severity"`
					Direction string   `json:"direction"`
					Evidence  []string `json:"evidence"`
					Remedy    []string `json:"remedy"`
				} `json:"verdicts"`
			} `json:"sessions"`
		}
		js := out[:strings.LastIndex(out, "}")+1]
		if err := json.Unmarshal([]byte(js), &rep); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if rep.Schema != "ikefrag.report" || rep.Version != 2 || len(rep.Sessions) != 1 {
			t.Fatalf("report header %+v", rep)
		}
		s := rep.Sessions[0]
		if s.Established == nil || *s.Established || s.SPIi != "238671c80375a0fb" || s.ProposalChosen == "" || s.PMTUEstimate == nil {
			t.Errorf("session %+v", s)
		}
		if _, ok := s.FragmentationSupported["initiator"]; !ok {
			t.Error("fragmentation_supported.initiator missing")
		}
		var codes []string
		for _, v := range s.Verdicts {
			codes = append(codes, v.Code+"/"+v.Severity+"/"+v.Direction)
			if len(v.Evidence) == 0 || len(v.Remedy) == 0 {
				t.Errorf("%s lacks evidence or remedy", v.Code)
			}
		}
		if strings.Join(codes, " ") != "WEAK_CRYPTO/warning/ FRAGMENTS_DROPPED/error/toward_server" {
			t.Errorf("verdicts %v", codes)
		}
	})
}

// A capture cut short mid-packet is analysed up to the cut, with a warning
// naming the frame; the exit status follows the verdicts.
func TestAnalyzeTruncatedCapture(t *testing.T) {
	b, err := os.ReadFile(repoLab("b.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	// Cut inside the last record's packet data.
	cut := filepath.Join(t.TempDir(), "cut.pcap")
	if err := os.WriteFile(cut, b[:len(b)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := runCtl(t, "analyze", "--json", cut)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (b.pcap's FRAGMENTS_DROPPED), output:\n%s", code, out)
	}
	var rep struct {
		Warnings []string `json:"warnings"`
		Summary  struct {
			Verdicts map[string]int `json:"verdicts"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "breaks off at frame") || rep.Summary.Verdicts["FRAGMENTS_DROPPED"] != 1 {
		t.Errorf("warnings %q verdicts %v", rep.Warnings, rep.Summary.Verdicts)
	}
	// Not a capture at all is still bad input.
	junk := filepath.Join(t.TempDir(), "junk.pcap")
	os.WriteFile(junk, []byte("not a capture file at all"), 0o600)
	if _, code := runCtl(t, "analyze", junk); code != 2 {
		t.Errorf("junk: exit %d, want 2", code)
	}
}
