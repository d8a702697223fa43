"""Messages: templates (Jinja in a sandbox, the shipped library), the variables a template
sees, HTML to text, and the MIME email built from a rendered template."""
