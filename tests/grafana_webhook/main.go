// Command grafana-webhook sends one alert notification the way Grafana's webhook contact point
// does (github.com/grafana/alerting: the webhook notifier's settings, payload and HTTP sender, with
// its HMAC signing and basic auth), for the test suite. It reads one request as JSON on stdin — the
// contact point's settings as provisioned, and the alerts — and writes whether the receiver took it.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/go-kit/log"
	alertinghttp "github.com/grafana/alerting/http"
	"github.com/grafana/alerting/images"
	"github.com/grafana/alerting/receivers"
	webhook "github.com/grafana/alerting/receivers/webhook/v1"
	"github.com/grafana/alerting/templates"
	"github.com/prometheus/alertmanager/notify"
	"github.com/prometheus/alertmanager/types"
	"github.com/prometheus/common/model"
)

type alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

type request struct {
	Settings    json.RawMessage   `json:"settings"` // the webhook contact point's settings, as provisioned
	ExternalURL string            `json:"externalURL"`
	GroupKey    string            `json:"groupKey"`
	GroupLabels map[string]string `json:"groupLabels"`
	Now         time.Time         `json:"now"`
	Alerts      []alert           `json:"alerts"`
}

func labelSet(m map[string]string) model.LabelSet {
	set := model.LabelSet{}
	for k, v := range m {
		set[model.LabelName(k)] = model.LabelValue(v)
	}
	return set
}

func send(req request) (bool, error) {
	plain := func(_ string, value string) string { return value } // provisioned settings are not encrypted
	cfg, err := webhook.NewConfig(req.Settings, plain)
	if err != nil {
		return false, fmt.Errorf("settings: %w", err)
	}
	logger := log.NewNopLogger()
	factory, err := templates.NewFactory(nil, logger, req.ExternalURL, "1")
	if err != nil {
		return false, fmt.Errorf("templates: %w", err)
	}
	tmpl, err := factory.GetTemplate(templates.GrafanaKind)
	if err != nil {
		return false, fmt.Errorf("templates: %w", err)
	}
	sender, err := alertinghttp.NewClient(nil)
	if err != nil {
		return false, err
	}
	notifier := webhook.New(cfg, receivers.Metadata{Name: "shoppulse-actions", Type: "webhook"}, tmpl, sender,
		&images.UnavailableProvider{}, logger, 1)
	alerts := make([]*types.Alert, 0, len(req.Alerts))
	for _, a := range req.Alerts {
		alerts = append(alerts, &types.Alert{Alert: model.Alert{
			Labels: labelSet(a.Labels), Annotations: labelSet(a.Annotations), StartsAt: a.StartsAt, EndsAt: a.EndsAt,
		}, UpdatedAt: req.Now})
	}
	ctx := notify.WithReceiverName(context.Background(), "shoppulse-actions")
	ctx = notify.WithGroupLabels(ctx, labelSet(req.GroupLabels))
	ctx = notify.WithGroupKey(ctx, req.GroupKey)
	ctx = notify.WithNow(ctx, req.Now)
	return notifier.Notify(ctx, alerts...)
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "request:", err)
		os.Exit(2)
	}
	out := map[string]string{"error": ""} // "": the receiver answered 2xx
	if _, err := send(req); err != nil {
		out["error"] = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
