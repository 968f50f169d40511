const path = require('path');
const { getDefaultConfig, mergeConfig } = require('@react-native/metro-config');

// apps/mobile lives two levels below the yarn workspaces root. Yarn classic hoists
// the dependencies into <root>/node_modules and links @hivesync-example/greeting
// there as a symlink to <root>/packages/greeting, so Metro must watch the whole
// workspace and look up modules in both node_modules folders.
const projectRoot = __dirname;
const workspaceRoot = path.resolve(projectRoot, '../..');

module.exports = mergeConfig(getDefaultConfig(projectRoot), {
  watchFolders: [workspaceRoot],
  resolver: {
    nodeModulesPaths: [
      path.resolve(projectRoot, 'node_modules'),
      path.resolve(workspaceRoot, 'node_modules'),
    ],
  },
});
