package web

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/ecowatt/fota"
)

type userRow struct {
	*fota.User
	Sessions int
}

func (d *Dashboard) usersPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	d.renderUsers(w, r, u, http.StatusOK, "", "", "")
}

func (d *Dashboard) renderUsers(w http.ResponseWriter, r *http.Request, u *viewer, status int, formError, name, role string) {
	users, err := d.store.Users(r.Context())
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	sessions, err := d.store.WebSessions(r.Context(), "", d.now())
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	count := map[string]int{}
	for _, s := range sessions {
		count[s.UserName]++
	}
	rows := make([]userRow, 0, len(users))
	for _, x := range users {
		rows = append(rows, userRow{User: x, Sessions: count[x.Name]})
	}
	if role == "" {
		role = fota.RoleViewer
	}
	d.render(w, r, status, "users", u, map[string]any{"Title": "Users", "Users": rows, "FormError": formError, "Name": name, "Role": role})
}

// addUser makes a user with the password an admin chose for them; they
// change it on the server's machine (fota user passwd).
func (d *Dashboard) addUser(w http.ResponseWriter, r *http.Request, u *viewer) {
	name, role, password := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("role"), r.PostFormValue("password")
	fail := func(err error) { d.renderUsers(w, r, u, d.statusOf(err), fota.ErrorMessage(err), name, role) }
	if !fota.ValidRole(role) {
		fail(fota.Errorf(fota.EINVALID, "role %q: want %s", role, strings.Join(fota.Roles, ", ")))
		return
	}
	if password != r.PostFormValue("again") {
		fail(fota.Errorf(fota.EINVALID, "the password and its repetition differ"))
		return
	}
	if err := d.cfg.CheckPassword(password); err != nil {
		fail(fota.Errorf(fota.EINVALID, "%s", err.Error())) // CheckStrength's messages never quote the password
		return
	}
	hash, err := d.cfg.HashPassword(password)
	if err != nil {
		fail(err)
		return
	}
	nu := &fota.User{Name: name, Role: role, PasswordHash: hash}
	if err := d.store.CreateUser(u.ctxFor(r), nu); err != nil {
		fail(err)
		return
	}
	d.log.Info("dashboard user added", "user", nu.Name, "role", nu.Role, "by", u.Name)
	d.redirectWith(w, r, "/users", fmt.Sprintf("User %s added as %s.", nu.Name, nu.Role))
}

func (d *Dashboard) removeUser(w http.ResponseWriter, r *http.Request, u *viewer) {
	name := r.PathValue("name")
	if name == u.Name {
		d.redirectWith(w, r, "/users", "You cannot remove yourself; ask another admin.")
		return
	}
	if r.PostFormValue("confirm") != "on" {
		d.redirectWith(w, r, "/users", "Not removed: tick the box beside Remove to confirm.")
		return
	}
	if err := d.store.RemoveUser(u.ctxFor(r), name); err != nil {
		d.redirectWith(w, r, "/users", "Not removed: "+fota.ErrorMessage(err))
		return
	}
	d.log.Info("dashboard user removed", "user", name, "by", u.Name)
	d.redirectWith(w, r, "/users", "User "+name+" removed; their sessions ended.")
}

func (d *Dashboard) signoutUser(w http.ResponseWriter, r *http.Request, u *viewer) {
	name := r.PathValue("name")
	n, err := d.store.RevokeUserSessions(u.ctxFor(r), name)
	if err != nil {
		d.redirectWith(w, r, "/users", "Not signed out: "+fota.ErrorMessage(err))
		return
	}
	d.redirectWith(w, r, "/users", fmt.Sprintf("User %s signed out of %d sessions.", name, n))
}
