from pocketrank.cli import main

main()
