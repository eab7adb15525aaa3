//! Drawing: the sandbox table, the optional logs pane, a status line and
//! the key help line at the bottom.

use heyvm_types::{SandboxInfo, SandboxStatus};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::app::App;
use crate::output::{human_bytes, human_duration};

pub const HELP: &str = "↑/↓ select  n new  s start  x stop  r restart  d delete  c/enter shell  l logs  q quit";

pub fn draw(frame: &mut Frame, app: &App, api_url: &str) {
    let logs_height = if app.logs_of.is_some() { Constraint::Percentage(45) } else { Constraint::Length(0) };
    let [table_area, logs_area, status_area, help_area] =
        Layout::vertical([Constraint::Min(4), logs_height, Constraint::Length(1), Constraint::Length(1)]).areas(frame.area());
    draw_table(frame, app, api_url, table_area);
    if app.logs_of.is_some() {
        draw_logs(frame, app, logs_area);
    }
    let status = match (&app.naming, &app.message, &app.list_error) {
        (Some(name), ..) => Line::from(vec![
            Span::styled("new sandbox name (empty: generated; enter create, esc cancel): ", Style::new().fg(Color::Yellow)),
            Span::raw(format!("{name}_")),
        ]),
        (None, message, list_error) => status_line(app, message, list_error),
    };
    frame.render_widget(Paragraph::new(status), status_area);
    frame.render_widget(Paragraph::new(Line::from(HELP).add_modifier(Modifier::REVERSED)), help_area);
}

/// The status line: the API's reachability, the last message, or why the
/// selected sandbox failed.
fn status_line<'a>(app: &'a App, message: &Option<(String, bool)>, list_error: &Option<String>) -> Line<'a> {
    match (message, list_error) {
        (_, Some(e)) => Line::from(Span::styled(format!("API unreachable: {e}"), Style::new().fg(Color::Red))),
        (Some((m, true)), _) => Line::from(Span::styled(m.clone(), Style::new().fg(Color::Red))),
        (Some((m, false)), _) => Line::from(m.clone()),
        (None, None) => match app.selected_index().map(|i| &app.sandboxes[i]) {
            Some(SandboxInfo { status: SandboxStatus::Failed, name, error_message: Some(why), .. }) => {
                Line::from(Span::styled(format!("{name} failed: {why}"), Style::new().fg(Color::Red)))
            }
            _ => Line::from(""),
        },
    }
}

fn draw_table(frame: &mut Frame, app: &App, api_url: &str, area: Rect) {
    let header = Row::new(["NAME", "ID", "STATUS", "SIZE", "UPTIME", "CPU", "MEMORY"]).add_modifier(Modifier::BOLD);
    let rows: Vec<Row> = app.sandboxes.iter().map(row).collect();
    let widths = [
        Constraint::Min(12),
        Constraint::Length(14),
        Constraint::Length(12),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(10),
    ];
    let title = format!(" heyvm — {} sandbox{} — API {api_url} ", app.sandboxes.len(), if app.sandboxes.len() == 1 { "" } else { "es" });
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::new().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
    if app.sandboxes.is_empty() && area.height > 3 {
        let hint =
            Paragraph::new("No sandboxes yet. Press n to create one (or `heyvm create --name demo` in another terminal).").dark_gray();
        frame.render_widget(hint, Rect { x: area.x + 2, y: area.y + 2, width: area.width.saturating_sub(4), height: 1 });
    }
}

fn row(s: &SandboxInfo) -> Row<'static> {
    let running = s.status == SandboxStatus::Running;
    let color = match s.status {
        SandboxStatus::Running => Color::Green,
        SandboxStatus::Stopped | SandboxStatus::Paused => Color::Yellow,
        SandboxStatus::Provisioning => Color::Cyan,
        SandboxStatus::Failed => Color::Red,
    };
    let dash = || "-".to_string();
    Row::new(vec![
        Span::raw(s.name.clone()),
        Span::raw(s.id.clone()),
        Span::styled(s.status.to_string(), Style::new().fg(color)),
        Span::raw(s.size_class.to_string()),
        Span::raw(if running { human_duration(s.uptime.secs) } else { dash() }),
        Span::raw(if running { format!("{:.1}%", s.cpu_usage) } else { dash() }),
        Span::raw(if running { human_bytes(s.memory_usage) } else { dash() }),
    ])
}

fn draw_logs(frame: &mut Frame, app: &App, area: Rect) {
    let name =
        app.logs_of.as_deref().map(|id| app.sandboxes.iter().find(|s| s.id == id).map(|s| s.name.as_str()).unwrap_or(id)).unwrap_or("");
    let inner_height = area.height.saturating_sub(2) as usize;
    let skip = app.logs.len().saturating_sub(inner_height);
    let lines: Vec<Line> = app.logs[skip..]
        .iter()
        .map(|l| {
            let src = Span::styled(format!("[{}] ", l.source), Style::new().fg(Color::DarkGray));
            Line::from(vec![src, Span::raw(l.message.trim_end().to_string())])
        })
        .collect();
    let block = Block::new().borders(Borders::ALL).title(format!(" logs: {name} (l or esc closes) "));
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}
