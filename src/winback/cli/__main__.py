from winback.cli import main

main()
