from bevctl.entry import main

main()
