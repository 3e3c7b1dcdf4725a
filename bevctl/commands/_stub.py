from bevctl.errors import NotAvailableYet


def not_yet(command: str, issue: str) -> None:
    raise NotAvailableYet(f"`bevctl {command}` is not available yet", fix=f"it lands with the {issue} issue")
