// Command notification-render renders Grafana notification templates the way Grafana's alerting
// does (github.com/grafana/alerting: its template factory, default templates and functions, and
// TmplText, which extends Alertmanager's template data with dashboard and silence URLs), for the
// test suite. It reads one request as JSON on stdin and writes the rendered strings as JSON.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/go-kit/log"
	"github.com/grafana/alerting/templates"
	"github.com/prometheus/alertmanager/notify"
	"github.com/prometheus/alertmanager/types"
	"github.com/prometheus/common/model"
)

type alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
}

type request struct {
	Templates   map[string]string `json:"templates"` // name -> template text, as provisioned
	ExternalURL string            `json:"externalURL"`
	OrgID       string            `json:"orgId"`
	Receiver    string            `json:"receiver"`
	GroupKey    string            `json:"groupKey"`
	GroupLabels map[string]string `json:"groupLabels"`
	Now         time.Time         `json:"now"` // alerts that ended before it are resolved
	Alerts      []alert           `json:"alerts"`
	Render      map[string]string `json:"render"` // field -> the contact point's setting, e.g. a Slack title
}

func labelSet(m map[string]string) model.LabelSet {
	set := model.LabelSet{}
	for k, v := range m {
		set[model.LabelName(k)] = model.LabelValue(v)
	}
	return set
}

func render(req request) (map[string]string, error) {
	definitions := make([]templates.TemplateDefinition, 0, len(req.Templates))
	for name, text := range req.Templates {
		definitions = append(definitions, templates.TemplateDefinition{Name: name, Template: text, Kind: templates.GrafanaKind})
	}
	logger := log.NewNopLogger()
	factory, err := templates.NewFactory(definitions, logger, req.ExternalURL, req.OrgID)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	tmpl, err := factory.GetTemplate(templates.GrafanaKind)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	alerts := make([]*types.Alert, 0, len(req.Alerts))
	for _, a := range req.Alerts {
		alerts = append(alerts, &types.Alert{Alert: model.Alert{
			Labels: labelSet(a.Labels), Annotations: labelSet(a.Annotations), StartsAt: a.StartsAt, EndsAt: a.EndsAt,
			GeneratorURL: a.GeneratorURL,
		}, UpdatedAt: req.Now})
	}
	ctx := notify.WithReceiverName(context.Background(), req.Receiver)
	ctx = notify.WithGroupLabels(ctx, labelSet(req.GroupLabels))
	ctx = notify.WithGroupKey(ctx, req.GroupKey)
	ctx = notify.WithNow(ctx, req.Now)
	var tmplErr error
	expand, _ := templates.TmplText(ctx, tmpl, alerts, logger, &tmplErr)
	out := map[string]string{}
	for field, setting := range req.Render {
		out[field] = expand(setting)
		if tmplErr != nil {
			return nil, fmt.Errorf("%s: %w", field, tmplErr)
		}
	}
	return out, nil
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "request:", err)
		os.Exit(2)
	}
	out, err := render(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
