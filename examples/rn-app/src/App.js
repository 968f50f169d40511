import React, { useState } from 'react';
import { Image, SafeAreaView, StyleSheet, Text } from 'react-native';
import { Counter } from './components/Counter';
import { Logo } from './components/Logo';

export default function App() {
  const [taps, setTaps] = useState(0);
  return (
    <SafeAreaView style={styles.container}>
      <Logo />
      <Text style={styles.title}>HiveSync preview</Text>
      <Counter value={taps} onPress={() => setTaps(taps + 1)} />
      {/* An image from a dependency: its asset name must not carry a server path. */}
      <Image source={require('react-native/Libraries/LogBox/UI/LogBoxImages/chevron-right.png')} />
    </SafeAreaView>
  );
}

const styles = StyleSheet.create({
  container: { flex: 1, alignItems: 'center', justifyContent: 'center', backgroundColor: '#fffbea' },
  title: { fontSize: 22, fontWeight: '600', marginVertical: 12 },
});
