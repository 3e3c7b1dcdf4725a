from bevctl.cli import main

main()
