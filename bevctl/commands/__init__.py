"""One module per command. Module level imports: typer and the standard library only."""
