package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/ecowatt/fota"
)

func (d *Dashboard) releasesPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	rels, err := d.store.Releases(r.Context(), "")
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	slices.Reverse(rels) // newest first
	d.render(w, r, http.StatusOK, "releases", u, map[string]any{"Title": "Releases", "Releases": rels, "MaxBundle": FormatBytes(d.cfg.MaxBundle)})
}

// uploadAnswer is what the page's upload script gets instead of a
// redirect, so it can show the outcome beside its progress bar.
type uploadAnswer struct {
	OK       bool   `json:"ok"`
	Message  string `json:"message"`
	Location string `json:"location,omitempty"`
}

// upload publishes a bundle sent from the releases page's form
// (multipart: the CSRF token first, then the file), verified by the
// server exactly as the admin API's publish verifies it.
func (d *Dashboard) upload(w http.ResponseWriter, r *http.Request, u *viewer) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(30 * time.Minute)) // large bundles over slow links
	fail := func(err error) {
		if wantsJSON(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(d.statusOf(err))
			json.NewEncoder(w).Encode(uploadAnswer{Message: fota.ErrorMessage(err)})
			return
		}
		d.redirectWith(w, r, "/releases", "Not published: "+fota.ErrorMessage(err))
	}
	if err := sameOrigin(r); err != nil {
		fail(err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, d.cfg.MaxBundle+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		fail(fota.Errorf(fota.EINVALID, "the upload is not a form with a file (multipart/form-data)"))
		return
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "csrf" {
		fail(fota.Errorf(fota.EFORBIDDEN, "this form is out of date or did not come from this dashboard (no CSRF token); reload the page and try again"))
		return
	}
	token, _ := io.ReadAll(io.LimitReader(part, 256))
	if !equalTokens(string(token), u.CSRF) {
		fail(fota.Errorf(fota.EFORBIDDEN, "this form is out of date or did not come from this dashboard (no valid CSRF token); reload the page and try again"))
		return
	}
	file, err := nextFilePart(mr)
	if err != nil {
		fail(err)
		return
	}
	rel, err := d.cfg.Publish(u.ctxFor(r), file)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			err = fota.Errorf(fota.ETOOLARGE, "the bundle is larger than %s, the most the server takes", FormatBytes(d.cfg.MaxBundle))
		}
		fail(err)
		return
	}
	d.log.Info("release published from the dashboard", "release_version", rel.Version, "hardware", rel.Hardware, "user", u.Name)
	msg := fmt.Sprintf("Release %s for %s published and verified. It is offered to no device until a rollout or a pin says so.",
		rel.Version, rel.Hardware)
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		d.setFlash(w, r, msg)
		json.NewEncoder(w).Encode(uploadAnswer{OK: true, Message: msg, Location: "/releases"})
		return
	}
	d.redirectWith(w, r, "/releases", msg)
}

// nextFilePart skips to the form's file.
func nextFilePart(mr *multipart.Reader) (*multipart.Part, error) {
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil, fota.Errorf(fota.EINVALID, "no bundle in the upload: choose a .fota file")
		}
		if err != nil {
			return nil, fota.Errorf(fota.EINVALID, "the upload could not be read: %v", errors.Unwrap(err))
		}
		if part.FormName() == "bundle" {
			if part.FileName() == "" {
				return nil, fota.Errorf(fota.EINVALID, "no bundle in the upload: choose a .fota file")
			}
			return part, nil
		}
	}
}

// maxReason bounds an operator's reason, which events and devices carry.
const maxReason = 200

func readReason(r *http.Request) (string, error) {
	reason := r.PostFormValue("reason")
	if !fota.PlainText(reason) || len(reason) > maxReason {
		return "", fota.Errorf(fota.EINVALID, "the reason must be plain text of at most %d bytes, on one line", maxReason)
	}
	return reason, nil
}

func (d *Dashboard) withdraw(w http.ResponseWriter, r *http.Request, u *viewer) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		d.errorPage(w, r, u, fota.Errorf(fota.ENOTFOUND, "no release %q", r.PathValue("id")))
		return
	}
	reason, err := readReason(r)
	if err != nil {
		d.redirectWith(w, r, "/releases", fota.ErrorMessage(err))
		return
	}
	if reason == "" {
		d.redirectWith(w, r, "/releases", "Not withdrawn: say why in the reason box (devices downloading it are told, and it cannot be undone).")
		return
	}
	rel, err := d.store.Release(r.Context(), id)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	_, ended, err := d.updates.WithdrawRelease(u.ctxFor(r), rel.Hardware, rel.Version, reason)
	if err != nil {
		d.redirectWith(w, r, "/releases", "Not withdrawn: "+fota.ErrorMessage(err))
		return
	}
	d.redirectWith(w, r, "/releases", fmt.Sprintf("Release %s for %s withdrawn; %d update sessions ended. Devices keep what they run.",
		rel.Version, rel.Hardware, ended))
}
