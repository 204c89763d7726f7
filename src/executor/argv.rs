//! argv templating: turning an agent's template and a task into the exact argv to exec.
//!
//! Rules (model text never reaches a shell and never becomes a flag):
//! - Placeholders `{task}`, `{role}`, `{role_toml}`, `{agent}`, `{session}`, `{delegation_id}` are
//!   substituted inside argv elements, in one pass: substituted text is never scanned again, so a
//!   task containing `{role}` stays literal. Other `{...}` text is left alone (JSON arguments stay
//!   valid).
//! - A template has exactly one `{task}`, and `argv[0]` holds no placeholder: the program is always
//!   the configured one and the task is always exactly one argv element.
//! - Flag guard: when an element *starts* with a placeholder and the substituted element starts
//!   with `-`, one space is put in front of it, unless the previous element is exactly `--`. No
//!   option parser reads " --dangerously-skip-permissions" as a flag. This matters for the default
//!   template too: claude's `-p` is a boolean flag (the prompt is a positional argument), so
//!   `claude -p --version` would otherwise print the version instead of running the task.
//! - Task text is cleaned before substitution ([`clean_task`]): control characters (C0, DEL, C1)
//!   are removed except newline and tab, and CR is dropped, so escape sequences from a screen can
//!   reach neither the sub-agent nor a terminal that echoes its argv.

/// A template the executor refuses to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    #[error("argv template is empty")]
    Empty,
    #[error("argv[0] {0:?} must be a fixed program, not a placeholder")]
    PlaceholderProgram(String),
    #[error("argv template must contain {{task}} exactly once (found {0})")]
    TaskCount(usize),
}

/// The placeholders a template may use. `{role_toml}` is the role as a TOML basic string (quoted,
/// escaped), for CLIs that read a `key=value` override as TOML (codex `-c
/// developer_instructions={role_toml}`): any role text arrives literally.
pub(crate) const PLACEHOLDERS: [&str; 6] = [
    "task",
    "role",
    "role_toml",
    "agent",
    "session",
    "delegation_id",
];

/// `text` as a TOML basic string: in double quotes, with `"`, `\\` and control characters escaped.
pub(crate) fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Values substituted for the placeholders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Values<'a> {
    pub task: &'a str,
    pub role: &'a str,
    pub agent: &'a str,
    pub session: &'a str,
    pub delegation_id: &'a str,
}

impl Values<'_> {
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        Some(std::borrow::Cow::Borrowed(match name {
            "task" => self.task,
            "role" => self.role,
            "role_toml" => return Some(toml_string(self.role).into()),
            "agent" => self.agent,
            "session" => self.session,
            "delegation_id" => self.delegation_id,
            _ => return None,
        }))
    }
}

/// Check a template against the rules above.
pub(crate) fn validate_template(template: &[String]) -> Result<(), TemplateError> {
    let first = template.first().ok_or(TemplateError::Empty)?;
    if PLACEHOLDERS
        .iter()
        .any(|p| first.contains(&format!("{{{p}}}")))
    {
        return Err(TemplateError::PlaceholderProgram(first.clone()));
    }
    let tasks: usize = template.iter().map(|e| e.matches("{task}").count()).sum();
    if tasks != 1 {
        return Err(TemplateError::TaskCount(tasks));
    }
    Ok(())
}

/// Remove control characters from model text: C0 (except `\n` and `\t`), DEL and C1; CR is dropped.
pub(crate) fn clean_task(task: &str) -> String {
    task.chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

/// Substitute one element; returns the text and whether it began with a placeholder.
fn substitute(element: &str, v: &Values<'_>) -> (String, bool) {
    let mut out = String::with_capacity(element.len());
    let mut rest = element;
    let mut starts_with_placeholder = false;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').and_then(|close| {
            let name = &after[..close];
            v.get(name).map(|val| (val, close))
        }) {
            Some((val, close)) => {
                if out.is_empty() && open == 0 && element.len() == rest.len() {
                    starts_with_placeholder = true;
                }
                out.push_str(&val);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out, starts_with_placeholder)
}

/// Build the argv for one delegation. `v.task` should already be [`clean_task`]ed.
pub(crate) fn expand(template: &[String], v: &Values<'_>) -> Result<Vec<String>, TemplateError> {
    validate_template(template)?;
    let mut argv = Vec::with_capacity(template.len());
    for (i, element) in template.iter().enumerate() {
        let (mut text, leading) = substitute(element, v);
        let after_double_dash = i > 0 && template[i - 1] == "--";
        if i > 0 && leading && text.starts_with('-') && !after_double_dash {
            text.insert(0, ' ');
        }
        argv.push(text);
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn vals(task: &str) -> Values<'_> {
        Values {
            task,
            role: "You are QA.",
            agent: "qa",
            session: "s1",
            delegation_id: "d1",
        }
    }

    #[test]
    fn substitutes_inside_elements_only() {
        let tpl = t(&[
            "prog",
            "--prompt={task}",
            "--sys",
            "{role}",
            "{agent}/{session}/{delegation_id}",
            "{\"json\": {unknown}}",
        ]);
        let argv = expand(&tpl, &vals("fix the bug; rm -rf / $(x) `y`")).unwrap();
        assert_eq!(
            argv,
            t(&[
                "prog",
                "--prompt=fix the bug; rm -rf / $(x) `y`",
                "--sys",
                "You are QA.",
                "qa/s1/d1",
                "{\"json\": {unknown}}",
            ])
        );
    }

    #[test]
    fn task_is_one_element_and_not_rescanned() {
        let tpl = t(&["prog", "-p", "{task}"]);
        let argv = expand(&tpl, &vals("a b\nc {role} {task}")).unwrap();
        assert_eq!(argv.len(), 3);
        assert_eq!(argv[2], "a b\nc {role} {task}");
    }

    #[test]
    fn dash_task_never_becomes_a_flag() {
        let task = "--dangerously-skip-permissions";
        // Standalone after a boolean flag (claude's -p): guarded with a leading space.
        let argv = expand(&t(&["claude", "-p", "{task}"]), &vals(task)).unwrap();
        assert_eq!(argv[2], " --dangerously-skip-permissions");
        assert!(!argv.iter().any(|a| a == task));
        // At the start of an element with more text: guarded too.
        let argv = expand(&t(&["prog", "{task} please"]), &vals(task)).unwrap();
        assert_eq!(argv[1], " --dangerously-skip-permissions please");
        // After `--` the parser already treats it as positional: left alone.
        let argv = expand(&t(&["prog", "--", "{task}"]), &vals(task)).unwrap();
        assert_eq!(argv[2], task);
        // As an option's inline value it cannot be a flag: left alone.
        let argv = expand(&t(&["prog", "--prompt={task}"]), &vals(task)).unwrap();
        assert_eq!(argv[1], "--prompt=--dangerously-skip-permissions");
        // Ordinary tasks are untouched.
        let argv = expand(&t(&["prog", "{task}"]), &vals("fix it")).unwrap();
        assert_eq!(argv[1], "fix it");
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(validate_template(&[]), Err(TemplateError::Empty));
        assert!(matches!(
            validate_template(&t(&["{task}"])),
            Err(TemplateError::PlaceholderProgram(_))
        ));
        assert!(matches!(
            validate_template(&t(&["{agent}", "{task}"])),
            Err(TemplateError::PlaceholderProgram(_))
        ));
        assert_eq!(
            validate_template(&t(&["prog"])),
            Err(TemplateError::TaskCount(0))
        );
        assert_eq!(
            validate_template(&t(&["prog", "{task}", "{task}"])),
            Err(TemplateError::TaskCount(2))
        );
        assert!(validate_template(&crate::config::default_agent_argv()).is_ok());
    }

    #[test]
    fn role_toml_is_a_quoted_escaped_toml_string() {
        let v = Values {
            task: "t",
            role: "say \"hi\"\\ then\nstop\u{1}",
            agent: "a",
            session: "s",
            delegation_id: "d",
        };
        let argv = expand(&t(&["codex", "-c", "x={role_toml}", "{task}"]), &v).unwrap();
        assert_eq!(argv[2], r#"x="say \"hi\"\\ then\nstop\u0001""#);
        assert_eq!(toml_string(""), "\"\"");
    }

    #[test]
    fn cleans_control_characters_but_keeps_newlines() {
        assert_eq!(
            clean_task("a\x1b[31mred\x1b[0m\r\nb\tc\x07\u{9b}d\u{7f}"),
            "a[31mred[0m\nb\tcd"
        );
    }
}
