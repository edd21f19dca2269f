//! Quoting for POSIX `sh`: every command line and script a plan or command renders goes
//! through [`shell_quote`].

/// Quotes one word for POSIX `sh`: returned as is when made only of `A-Za-z0-9_@%+=:,./-`
/// (and not empty), otherwise wrapped in single quotes with each `'` written as `'\''`.
///
/// ```
/// use courier_tools::shell_quote;
///
/// assert_eq!(shell_quote("--model"), "--model");
/// assert_eq!(shell_quote(""), "''");
/// assert_eq!(shell_quote("a b"), "'a b'");
/// ```
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}
