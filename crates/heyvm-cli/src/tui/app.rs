//! TUI state and what each key does. Rendering lives in `view`, I/O in
//! `worker`; this file only changes state and returns what to do next.

use heyvm_types::{LogEntry, SandboxInfo, SandboxStatus};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What the main loop should do after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// start, stop, restart or delete: (action, id, label).
    Action(&'static str, String, String),
    /// Suspend the screen and run `heyvm sh <id>`.
    Shell(String),
    /// Follow this sandbox's logs (None: close the pane).
    Follow(Option<String>),
    /// Create a sandbox with this name (None: a generated one).
    Create(Option<String>),
}

/// Longest name the create prompt takes (the API checks the rest).
const MAX_NAME: usize = 63;

pub struct App {
    pub sandboxes: Vec<SandboxInfo>,
    /// Id of the selected sandbox; kept by id so refreshes don't move it.
    pub selected: Option<String>,
    /// Sandbox awaiting delete confirmation.
    pub confirm_delete: Option<String>,
    /// The name being typed for a new sandbox (`n`), while the prompt is open.
    pub naming: Option<String>,
    /// Sandbox whose logs are shown, with the last lines fetched.
    pub logs_of: Option<String>,
    pub logs: Vec<LogEntry>,
    /// Status line and whether it reports an error.
    pub message: Option<(String, bool)>,
    /// Last refresh error (daemon unreachable and the like).
    pub list_error: Option<String>,
}

impl App {
    pub fn new() -> App {
        App {
            sandboxes: Vec::new(),
            selected: None,
            confirm_delete: None,
            naming: None,
            logs_of: None,
            logs: Vec::new(),
            message: None,
            list_error: None,
        }
    }

    pub fn set_list(&mut self, mut list: Vec<SandboxInfo>) {
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.name.cmp(&b.name)));
        self.sandboxes = list;
        self.list_error = None;
        let still_there = self.selected.as_ref().is_some_and(|id| self.sandboxes.iter().any(|s| &s.id == id));
        if !still_there {
            self.selected = self.sandboxes.first().map(|s| s.id.clone());
        }
    }

    pub fn selected_index(&self) -> Option<usize> {
        let id = self.selected.as_ref()?;
        self.sandboxes.iter().position(|s| &s.id == id)
    }

    fn current(&self) -> Option<&SandboxInfo> {
        self.selected_index().map(|i| &self.sandboxes[i])
    }

    fn move_by(&mut self, delta: isize) {
        if self.sandboxes.is_empty() {
            return;
        }
        let last = self.sandboxes.len() as isize - 1;
        let i = self.selected_index().map(|i| i as isize + delta).unwrap_or(0).clamp(0, last);
        self.selected = Some(self.sandboxes[i as usize].id.clone());
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), false));
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), true));
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Effect::Quit;
        }
        if self.naming.is_some() {
            return self.on_name_key(key.code);
        }
        if let Some(id) = self.confirm_delete.take() {
            let label = self.label_of(&id);
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    self.info(format!("deleting {label}…"));
                    Effect::Action("delete", id, label)
                }
                _ => {
                    self.info("delete cancelled");
                    Effect::None
                }
            };
        }
        match key.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Esc if self.logs_of.is_some() => return self.close_logs(),
            KeyCode::Esc => return Effect::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            KeyCode::Char('n') => {
                self.naming = Some(String::new());
                self.message = None;
            }
            _ => return self.on_sandbox_key(key.code),
        }
        Effect::None
    }

    /// Keys while the new sandbox's name is typed: Enter creates it (an
    /// empty name means a generated one), Esc cancels.
    fn on_name_key(&mut self, code: KeyCode) -> Effect {
        let Some(name) = self.naming.as_mut() else { return Effect::None };
        match code {
            KeyCode::Enter => {
                let name = self.naming.take().unwrap_or_default();
                let shown = if name.is_empty() { "a new sandbox".to_string() } else { name.clone() };
                self.info(format!("creating {shown}…"));
                return Effect::Create(Some(name).filter(|n| !n.is_empty()));
            }
            KeyCode::Esc => {
                self.naming = None;
                self.info("create cancelled");
            }
            KeyCode::Backspace => {
                name.pop();
            }
            KeyCode::Char(c) if !c.is_control() && name.len() < MAX_NAME => name.push(c),
            _ => {}
        }
        Effect::None
    }

    /// Keys that act on the selected sandbox.
    fn on_sandbox_key(&mut self, code: KeyCode) -> Effect {
        let Some(sb) = self.current() else {
            if matches!(code, KeyCode::Char('s' | 'x' | 'r' | 'd' | 'l' | 'c') | KeyCode::Enter) {
                self.info("no sandbox selected; create one with n");
            }
            return Effect::None;
        };
        let (id, label, status) = (sb.id.clone(), sb.name.clone(), sb.status);
        let action = |app: &mut App, action: &'static str, verb: &str| {
            app.info(format!("{verb} {label}…"));
            Effect::Action(action, id.clone(), label.clone())
        };
        match code {
            KeyCode::Char('s') => action(self, "start", "starting"),
            KeyCode::Char('x') => action(self, "stop", "stopping"),
            KeyCode::Char('r') => action(self, "restart", "restarting"),
            KeyCode::Char('d') | KeyCode::Delete => {
                self.confirm_delete = Some(id);
                self.info(format!("delete {label} and all its files? y/n"));
                Effect::None
            }
            KeyCode::Char('l') if self.logs_of.as_deref() == Some(id.as_str()) => self.close_logs(),
            KeyCode::Char('l') => {
                self.logs_of = Some(id.clone());
                self.logs.clear();
                Effect::Follow(Some(id))
            }
            KeyCode::Char('c') | KeyCode::Enter if status != SandboxStatus::Running => {
                self.error(format!("{label} is {status}; start it first (s)"));
                Effect::None
            }
            KeyCode::Char('c') | KeyCode::Enter => Effect::Shell(id),
            _ => Effect::None,
        }
    }

    fn close_logs(&mut self) -> Effect {
        self.logs_of = None;
        self.logs.clear();
        Effect::Follow(None)
    }

    fn label_of(&self, id: &str) -> String {
        self.sandboxes.iter().find(|s| s.id == id).map(|s| s.name.clone()).unwrap_or_else(|| id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(id: &str, status: SandboxStatus, created_at: i64) -> SandboxInfo {
        let mut v: SandboxInfo = serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("n-{id}"), "slug": id, "status": "running", "sandbox_type": "shell",
            "image": "", "backend_type": "bubblewrap", "size_class": "small", "uptime": {"secs": 0, "nanos": 0},
            "cpu_usage": 0.0, "memory_usage": 0, "mounts": [], "open_ports": [], "ttl_seconds": null,
            "ttl_remaining_seconds": null, "created_at": created_at, "guest_ip": null, "urls": [],
            "start_command": null, "working_directory": "/workspace", "env_vars": {}, "setup_hooks": [],
            "error_message": null, "is_deployed": false
        }))
        .expect("SandboxInfo fixture");
        v.status = status;
        v
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn selection_follows_id_across_refreshes() {
        let mut app = App::new();
        app.set_list(vec![sb("a", SandboxStatus::Running, 1), sb("b", SandboxStatus::Running, 2)]);
        assert_eq!(app.selected.as_deref(), Some("a"));
        app.on_key(key('j'));
        assert_eq!(app.selected.as_deref(), Some("b"));
        // A new, older sandbox appears first: the selection stays on b.
        app.set_list(vec![sb("b", SandboxStatus::Running, 2), sb("z", SandboxStatus::Running, 0), sb("a", SandboxStatus::Running, 1)]);
        assert_eq!(app.selected_index(), Some(2));
        // b disappears: the first row is selected.
        app.set_list(vec![sb("a", SandboxStatus::Running, 1)]);
        assert_eq!(app.selected.as_deref(), Some("a"));
    }

    #[test]
    fn delete_needs_confirmation() {
        let mut app = App::new();
        app.set_list(vec![sb("a", SandboxStatus::Running, 1)]);
        assert_eq!(app.on_key(key('d')), Effect::None);
        assert_eq!(app.on_key(key('n')), Effect::None);
        assert_eq!(app.on_key(key('d')), Effect::None);
        assert_eq!(app.on_key(key('y')), Effect::Action("delete", "a".into(), "n-a".into()));
    }

    #[test]
    fn shell_only_when_running() {
        let mut app = App::new();
        app.set_list(vec![sb("a", SandboxStatus::Stopped, 1)]);
        assert_eq!(app.on_key(key('c')), Effect::None);
        assert!(app.message.as_ref().is_some_and(|(_, err)| *err));
        app.set_list(vec![sb("a", SandboxStatus::Running, 1)]);
        assert_eq!(app.on_key(key('c')), Effect::Shell("a".into()));
    }

    #[test]
    fn create_key_prompts_for_a_name() {
        let mut app = App::new();
        assert_eq!(app.on_key(key('n')), Effect::None);
        for c in "web-1x".chars() {
            // Typed letters go to the name, not to the sandbox keys (x = stop).
            assert_eq!(app.on_key(key(c)), Effect::None);
        }
        app.on_key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE));
        assert_eq!(app.naming.as_deref(), Some("web-1"));
        assert_eq!(app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)), Effect::Create(Some("web-1".into())));
        assert!(app.naming.is_none());
        // An empty name asks for a generated one; Esc cancels.
        app.on_key(key('n'));
        assert_eq!(app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)), Effect::Create(None));
        app.on_key(key('n'));
        assert_eq!(app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)), Effect::None);
        assert!(app.naming.is_none());
        assert_eq!(app.on_key(key('q')), Effect::Quit);
    }

    #[test]
    fn logs_key_toggles_following() {
        let mut app = App::new();
        app.set_list(vec![sb("a", SandboxStatus::Running, 1)]);
        assert_eq!(app.on_key(key('l')), Effect::Follow(Some("a".into())));
        assert_eq!(app.on_key(key('l')), Effect::Follow(None));
        assert_eq!(app.on_key(key('q')), Effect::Quit);
    }
}
